"""Tally's one vocabulary of amounts, currencies and rounding.

Ledger amounts are integers in the currency's minor unit; prices and quantities are
``Decimal``. Nothing here ever touches ``float``. :func:`round_to_minor` is the one place
where an exact amount becomes a payable one.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from ledger.errors import InvalidInput

# ISO 4217 codes Tally accepts, with the number of digits of their minor unit.
MINOR_UNIT_DIGITS: dict[str, int] = {
    "AUD": 2,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "PHP": 2,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TRY": 2,
    "TWD": 2,
    "USD": 2,
    "ZAR": 2,
    "BHD": 3,
}

#: Unit prices may carry up to this many decimal places (e.g. $0.000003 per token).
MAX_PRICE_PLACES = 12

#: The most minor units one ledger amount can hold (PostgreSQL's BIGINT).
MAX_MINOR_UNITS = 2**63 - 1


def normalize_currency(code: str, *, field: str = "currency") -> str:
    """The upper-case ISO 4217 code, or :class:`InvalidInput` naming ``field``."""
    normalized = (code or "").strip().upper()
    if normalized not in MINOR_UNIT_DIGITS:
        raise InvalidInput(f"unknown currency {code!r}: use an ISO 4217 code such as USD or EUR", field=field)
    return normalized


def parse_decimal(value: object, *, field: str) -> Decimal:
    """Read an exact decimal from a string or an integer; floats are refused, not rounded."""
    if isinstance(value, bool | float):
        raise InvalidInput(f'write {value!r} as a decimal string (e.g. "0.04") so it stays exact', field=field)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidInput(f"{value!r} is not a decimal number", field=field) from None
    else:
        raise InvalidInput(f"{value!r} is not a decimal number", field=field)
    if not result.is_finite():
        raise InvalidInput(f"{value!r} is not a finite decimal number", field=field)
    return result


def decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def round_to_minor(amount: Decimal, currency: str) -> int:
    """Round an exact amount in major units to an integer of minor units.

    The rule: half away from zero (``ROUND_HALF_UP`` in ``decimal``), at the currency's minor
    unit, applied once per invoice line after the line's exact amount is summed — never to
    unit prices or partial sums.
    """
    digits = MINOR_UNIT_DIGITS[currency]
    with localcontext(prec=80):  # never round before the one rounding below
        return int(amount.scaleb(digits).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_major(amount_minor: int, currency: str) -> Decimal:
    """Minor units back to an exact Decimal in major units, with the currency's digits."""
    digits = MINOR_UNIT_DIGITS[currency]
    return Decimal(amount_minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def places_needed(value: Decimal) -> int:
    """The decimal places ``value`` needs, its trailing zeros dropped (``1.500`` needs 1). Read
    from its digits, exactly: ``normalize()`` would first round to the context's 28 significant
    digits, and ``1.0000000000000000000000000001`` would pass for ``1``."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return 0
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    return max(0, -(exponent + len(digits) - len(significant)))


def fits_minor_unit(amount: Decimal, currency: str) -> bool:
    """Whether an amount in major units is payable as it is (no fraction of a minor unit)."""
    return places_needed(amount) <= MINOR_UNIT_DIGITS[currency]


def quantize_major(amount: Decimal, currency: str) -> Decimal:
    """An amount that fits the currency's minor unit, shown with exactly its digits ("20.00")."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNIT_DIGITS[currency]))


def plain_decimal(value: Decimal) -> Decimal:
    """A price or quantity without the storage's trailing zeros (0.040000000000 → 0.04)."""
    normalized = value.normalize()
    return normalized.quantize(Decimal(1)) if normalized == normalized.to_integral() else normalized


def to_minor_exact(amount: Decimal, currency: str, *, field: str = "amount") -> int:
    """Minor units of an amount given by a user, which must already be payable: a fraction of the
    minor unit, however far down (any number of significant digits), is refused, never rounded;
    so is an amount beyond what the ledger holds (checked before any arithmetic, so a huge
    exponent costs nothing)."""
    if not fits_minor_unit(amount, currency):
        raise InvalidInput(
            f"{amount} has a fraction of the smallest {currency} unit; use at most "
            f"{MINOR_UNIT_DIGITS[currency]} decimal places",
            field=field,
        )
    largest = to_major(MAX_MINOR_UNITS, currency)
    if amount.copy_abs() > largest:  # copy_abs and comparison are exact; abs() would round
        raise InvalidInput(f"{amount} is more than Tally holds in one amount (at most {largest})", field=field)
    return round_to_minor(amount, currency)
