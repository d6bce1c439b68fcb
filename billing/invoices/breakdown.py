"""How a usage line's quantity splits into the allowance used and the tiers it reached. Pure.

The breakdown is shown only when it rates back to the line's exact amount (:func:`breakdown`
returns None otherwise: a price override or a prorated allowance changed the terms), so a document
never shows a working that disagrees with the invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pricing.rating import ZERO, ChargeTerms, Tier, rate, tier_reached

TIERED_MODELS = ("graduated", "volume")


@dataclass(frozen=True)
class TierBand:
    number: int  # the tier's place in the charge, from 1
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount_exact: Decimal


@dataclass(frozen=True)
class LineBreakdown:
    allowance_used: Decimal | None  # None: the charge has no allowance
    tiers: list[TierBand]


def breakdown(terms: ChargeTerms, quantity: Decimal, amount_exact: Decimal) -> LineBreakdown | None:
    """The allowance taken off first, then the billable units per tier (graduated: each tier its
    band; volume: the one tier reached prices every unit). None when there is nothing to add to
    the line: no allowance, and one tier without a flat fee."""
    if rate(terms, quantity) != amount_exact:
        return None
    allowance = min(quantity, terms.included) if terms.included else None
    billable = max(quantity - terms.included, ZERO)
    bands: list[TierBand] = []
    if terms.model == "graduated":
        lower = ZERO
        for number, tier in enumerate(terms.tiers, start=1):
            upper = billable if tier.up_to is None else min(billable, tier.up_to)
            if upper > lower:
                units = upper - lower
                bands.append(
                    TierBand(number, units, tier.unit_price, tier.flat_fee, units * tier.unit_price + tier.flat_fee)
                )
            if tier.up_to is None or billable <= tier.up_to:
                break
            lower = tier.up_to
    elif terms.model == "volume" and billable > 0:
        tier = tier_reached(terms.tiers, billable)
        number = terms.tiers.index(tier) + 1
        bands.append(
            TierBand(number, billable, tier.unit_price, tier.flat_fee, billable * tier.unit_price + tier.flat_fee)
        )
    if allowance is None and len(bands) <= 1 and not any(band.flat_fee for band in bands):
        return None  # one tier at one price: the line's own quantity and amount say it all
    return LineBreakdown(allowance, bands)


def _band(number: int, units: Decimal, tier: Tier) -> TierBand:
    return TierBand(number, units, tier.unit_price, tier.flat_fee, units * tier.unit_price + tier.flat_fee)
