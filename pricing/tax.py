"""Tax: which rates apply to a buyer, and the tax of an invoice per rate. Pure: no I/O.

It lives in ``pricing`` beside rating because the catalog declares the rates and because, like
rating, it is exact arithmetic over prices that must be provable without a database (the
property tests in ``tests/pricing/test_tax.py``). Billing calls it through one seam,
:data:`TaxCalculator` (``billing.invoices.taxation.calculate_taxes`` by default): an external tax provider
plugs in there later, with the same inputs and the same :class:`TaxLine` answers.

The rules:

- **Which rates.** An ``exempt`` buyer pays none. A buyer under reverse charge pays none either
  and the invoice says so (a reverse-charge line of zero tax): when their ``tax_exemption`` says
  ``reverse_charge``, or automatically for EU B2B (the buyer has a tax id, their country is in
  the EU and differs from the seller's, itself in the EU). Otherwise the rates assigned to the
  buyer explicitly, else the rates of their address: the rates of their country that name no
  region, and those that name their region.
- **How much.** Each rate applies to the sum of the invoice's lines (every line is taxable,
  discount lines included, so tax is on the discounted amount), in minor units, and is rounded
  ONCE per rate and invoice with :func:`ledger.money.round_to_minor` (never line by line: three
  lines of 0.10 at 5 % owe 0.015, so 0.02, where rounding each line's 0.005 would owe 0.03).
  An exclusive rate adds ``taxable × rate``; an inclusive rate is the part of the gross that is
  tax, ``gross − gross / (1 + rate)``, and leaves the total unchanged. Rates do not compound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from babel import Locale

from ledger.money import round_to_minor, to_major

#: The EU member states (ISO 3166-1 alpha-2; Greece is ``GR`` here, not VAT's ``EL``).
EU_COUNTRIES = frozenset(
    {
        *("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE"),
        *("IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"),
    }
)
#: ISO 3166-1 alpha-2 codes the CLDR names (Babel's territories), so a typo such as ``XX`` is
#: refused; less CLDR's groupings and placeholders (EU, the euro area, the UN, "unknown"…) that
#: are no country. Kosovo's user-assigned ``XK`` stays: tax authorities use it.
NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"})
KNOWN_COUNTRIES = frozenset(
    code
    for code in Locale("en").territories
    if isinstance(code, str) and len(code) == 2 and code.isalpha() and code not in NOT_COUNTRIES
)
MAX_RATE = Decimal(100)  # a rate is a percent: 0 <= rate < 100
REVERSE_CHARGE_KEY = "reverse_charge"
REVERSE_CHARGE_NOTE = "Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC)"


@dataclass(frozen=True)
class TaxRate:
    """A rate as the catalog declares it; ``rate`` is a percent (``20`` is 20 %)."""

    key: str
    name: str
    rate: Decimal
    inclusive: bool
    country: str
    region: str | None = None


@dataclass(frozen=True)
class TaxBuyer:
    """What decides a buyer's tax: their address, tax id, exemption and assigned rate keys."""

    country: str | None
    region: str | None
    tax_id: str | None
    tax_exemption: str  # none | exempt | reverse_charge
    assigned: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaxTreatment:
    rates: tuple[TaxRate, ...]
    reverse_charge: bool = False


@dataclass(frozen=True)
class TaxLine:
    """One rate's tax on an invoice, in minor units. ``taxable`` is the net the rate applies to
    (for an inclusive rate, the gross less its tax). A reverse-charge line carries no tax."""

    rate_key: str
    name: str
    rate: Decimal
    inclusive: bool
    taxable: int
    tax: int
    reverse_charge: bool = False


def is_reverse_charge(buyer: TaxBuyer, seller_country: str | None) -> bool:
    """Reverse charge by the buyer's exemption, or EU B2B across a border within the EU."""
    if buyer.tax_exemption == "reverse_charge":
        return True
    return bool(
        buyer.tax_exemption == "none"
        and buyer.tax_id
        and seller_country in EU_COUNTRIES
        and buyer.country in EU_COUNTRIES
        and buyer.country != seller_country
    )


def treatment(rates: Sequence[TaxRate], buyer: TaxBuyer, seller_country: str | None) -> TaxTreatment:
    """The rates that apply to ``buyer`` (see the module's rules). Assigned keys the catalog no
    longer declares are skipped: assigning checks them, and a rate is never deleted."""
    if buyer.tax_exemption == "exempt":
        return TaxTreatment(())
    if is_reverse_charge(buyer, seller_country):
        return TaxTreatment((), reverse_charge=True)
    if buyer.assigned:
        by_key = {rate.key: rate for rate in rates}
        return TaxTreatment(tuple(by_key[key] for key in buyer.assigned if key in by_key))
    return TaxTreatment(
        tuple(
            rate
            for rate in rates
            if buyer.country is not None
            and rate.country == buyer.country
            and (rate.region is None or rate.region == buyer.region)
        )
    )


def tax_lines(line_amounts: Sequence[int], applied: TaxTreatment, currency: str) -> list[TaxLine]:
    """The tax lines of an invoice whose lines are ``line_amounts`` (minor units, already rounded
    once each): one per rate, each rounded once; under reverse charge one line of no tax."""
    gross = sum(line_amounts)
    if applied.reverse_charge:
        return [TaxLine(REVERSE_CHARGE_KEY, "Reverse charge", Decimal(0), False, gross, 0, reverse_charge=True)]
    amount = to_major(gross, currency)
    lines = []
    for rate in applied.rates:
        fraction = rate.rate / 100
        if rate.inclusive:
            tax = round_to_minor(amount - amount / (1 + fraction), currency)
            lines.append(TaxLine(rate.key, rate.name, rate.rate, True, gross - tax, tax))
        else:
            lines.append(
                TaxLine(rate.key, rate.name, rate.rate, False, gross, round_to_minor(amount * fraction, currency))
            )
    return lines


def exclusive_tax(lines: Sequence[TaxLine]) -> int:
    """What the tax adds to the invoice's total (inclusive tax is inside the lines already)."""
    return sum(line.tax for line in lines if not line.inclusive)


def inclusive_tax(lines: Sequence[TaxLine]) -> int:
    return sum(line.tax for line in lines if line.inclusive)


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split ``amount`` over ``weights`` in proportion, in whole minor units that sum to exactly
    ``amount`` (largest remainder; ties to the first). Inclusive tax is taken out of each revenue
    account this way, so the ledger's legs still balance to the unit. All zero weights: all to
    the first."""
    if not weights:
        return []
    base = sum(weights)
    if base == 0:
        return [amount, *([0] * (len(weights) - 1))]
    shares = [amount * weight // base for weight in weights]
    remainders = [amount * weight - share * base for weight, share in zip(weights, shares, strict=True)]
    # Floor division leaves remainders of the base's sign, so 0 <= left < len(weights).
    left = amount - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i] if base > 0 else remainders[i], i))
    for index in order[:left]:
        shares[index] += 1
    return shares


class TaxCalculator(Protocol):
    """The seam an external tax provider implements: given the invoice's line amounts, its
    currency, the catalog's rates, the buyer and the seller's country, the tax lines."""

    def __call__(
        self,
        line_amounts: Sequence[int],
        currency: str,
        rates: Sequence[TaxRate],
        buyer: TaxBuyer,
        seller_country: str | None,
    ) -> list[TaxLine]: ...


def catalog_taxes(
    line_amounts: Sequence[int],
    currency: str,
    rates: Sequence[TaxRate],
    buyer: TaxBuyer,
    seller_country: str | None,
) -> list[TaxLine]:
    """Tally's own calculator: the catalog's rates by the rules above."""
    return tax_lines(line_amounts, treatment(rates, buyer, seller_country), currency)
