"""Rating: a charge's terms and a quantity give an exact amount. Pure, Decimal throughout.

Rules (the catalog's charge models):
- the ``included`` allowance is taken off first: ``billable = max(quantity - included, 0)``;
- ``per_unit``: billable × unit price;
- ``graduated``: each tier prices the billable units that fall inside it (``up_to`` is inclusive);
- ``volume``: the tier the billable quantity reaches prices every billable unit;
- ``package``: every started package of ``package_size`` units costs ``package_price``;
- ``minimum``: the charge is never below it for a period.
Nothing is rounded here: amounts keep every digit until an invoice line rounds them once
(``ledger.money.round_to_minor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal, localcontext

ZERO = Decimal(0)
# Significant digits of every rating operation: a 30-digit price times a 10^12 quantity with
# decimals stays exact (Python's default of 28 would round it silently).
RATING_PRECISION = 80
SHARE_QUANTUM = Decimal(1).scaleb(-12)


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: no upper bound
    unit_price: Decimal


@dataclass(frozen=True)
class ChargeTerms:
    model: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal = ZERO
    minimum: Decimal | None = None


def rate(terms: ChargeTerms, quantity: Decimal) -> Decimal:
    with localcontext(prec=RATING_PRECISION):
        billable = max(quantity - terms.included, ZERO)
        amount = _usage_amount(terms, billable)
        return max(amount, terms.minimum) if terms.minimum is not None else amount


def _usage_amount(terms: ChargeTerms, billable: Decimal) -> Decimal:
    if terms.model == "per_unit":
        assert terms.unit_price is not None
        return billable * terms.unit_price
    if terms.model == "graduated":
        amount, lower = ZERO, ZERO
        for tier in terms.tiers:
            upper = billable if tier.up_to is None else min(billable, tier.up_to)
            if upper > lower:
                amount += (upper - lower) * tier.unit_price
            if tier.up_to is None or billable <= tier.up_to:
                break
            lower = tier.up_to
        return amount
    if terms.model == "volume":
        for tier in terms.tiers:
            if tier.up_to is None or billable <= tier.up_to:
                return billable * tier.unit_price
        raise ValueError("volume tiers must end with an unbounded tier")
    if terms.model == "package":
        assert terms.package_size is not None and terms.package_price is not None
        packages = (billable / terms.package_size).to_integral_value(rounding=ROUND_CEILING)
        return packages * terms.package_price
    raise ValueError(f"unknown charge model {terms.model!r}")


def allocate(amount: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split an exact amount across parts in proportion to their weights, so that the parts
    add up to the amount exactly: each share is cut to 12 decimal places (a price's precision,
    which also keeps later sums exact in any decimal context) and the last part takes the rest."""
    if not weights:
        return []
    with localcontext(prec=RATING_PRECISION):
        total = sum(weights, ZERO)
        if total == 0:
            return [ZERO] * (len(weights) - 1) + [amount]
        shares = [(amount * weight / total).quantize(SHARE_QUANTUM, rounding=ROUND_DOWN) for weight in weights[:-1]]
        return [*shares, amount - sum(shares, ZERO)]
