"""How a usage line's quantity splits into the allowance used and the tiers it reached. Pure.

The breakdown is shown only when it rates back to the line's exact amount (:func:`breakdown`
returns None otherwise: a price override or a prorated allowance changed the terms), so a document
never shows a working that disagrees with the invoice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from ledger.money import plain_decimal, round_to_minor, to_major
from pricing.models import PlanCharge
from pricing.rating import ZERO, ChargeTerms, Tier, needs_events, rate, tier_reached
from pricing.service import charge_terms

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


def _number(value: Decimal) -> str:
    return f"{plain_decimal(value):,f}"


def _counted(quantity: Decimal, unit: str) -> str:
    """``"314 calls"``: the meter's unit, made plural the plain English way when it is a word."""
    shown = unit.strip()
    if shown and quantity != 1 and shown.isalpha() and not shown.endswith("s"):
        shown += "s"
    return f"{_number(quantity)} {shown}".rstrip()


def explain_usage(terms: ChargeTerms, quantity: Decimal, amount_exact: Decimal, unit: str) -> str | None:
    """How a usage line's amount follows from its quantity, in one line a customer can check:
    ``"314 calls, 250 included, 64 × 0.04 = 2.56"``. None when the charge's terms do not rate the
    quantity back to the line's exact amount (a price override, an allowance prorated over part of
    a period, an interim invoice's difference, a percentage rated event by event): a working that
    disagrees with the invoice is worse than none."""
    if needs_events(terms) or rate(terms, quantity) != amount_exact:
        return None
    parts = [_counted(quantity, unit)]
    if terms.included:
        parts.append(f"{_number(min(quantity, terms.included))} included")
    billable = max(quantity - terms.included, ZERO)
    if billable == 0:
        parts.append("nothing billable" + (f", the minimum {_number(amount_exact)}" if amount_exact else ""))
        return ", ".join(parts)
    if terms.model == "per_unit":
        assert terms.unit_price is not None
        working, raw = f"{_number(billable)} × {_number(terms.unit_price)}", billable * terms.unit_price
    elif terms.model == "graduated":
        bands = []
        lower, raw = ZERO, ZERO
        for number, tier in enumerate(terms.tiers, start=1):
            upper = billable if tier.up_to is None else min(billable, tier.up_to)
            if upper > lower:
                band = _band(number, upper - lower, tier)
                raw += band.amount_exact
                fee = f" + {_number(band.flat_fee)}" if band.flat_fee else ""
                bands.append(f"{_number(band.units)} × {_number(band.unit_price)}{fee} (tier {number})")
            if tier.up_to is None or billable <= tier.up_to:
                break
            lower = tier.up_to
        working = " + ".join(bands)
    elif terms.model in ("volume", "stair_step"):
        tier = tier_reached(terms.tiers, billable)
        number = terms.tiers.index(tier) + 1
        if terms.model == "stair_step":
            working, raw = f"tier {number} flat", tier.flat_fee
        else:
            fee = f" + {_number(tier.flat_fee)}" if tier.flat_fee else ""
            working = f"{_number(billable)} × {_number(tier.unit_price)}{fee} (tier {number})"
            raw = billable * tier.unit_price + tier.flat_fee
    elif terms.model == "package":
        assert terms.package_size is not None and terms.package_price is not None
        packages = rate(replace(terms, included=ZERO, minimum=None), billable) / terms.package_price
        plural = "" if packages == 1 else "s"
        size, price = _number(terms.package_size), _number(terms.package_price)
        working = f"{_number(packages)} package{plural} of {size} × {price}"
        raw = packages * terms.package_price
    else:
        return None
    if raw != amount_exact:  # the charge's minimum raised it
        parts.append(f"{working} = {_number(raw)}, raised to the minimum {_number(amount_exact)}")
    else:
        parts.append(f"{working} = {_number(amount_exact)}")
    return ", ".join(parts)


def line_explanation(
    kind: str,
    quantity: Decimal | None,
    amount_exact: Decimal,
    charge: PlanCharge | None,
    unit: str,
    currency: str,
    parts: list[tuple[Decimal, Decimal]] | None = None,
) -> str | None:
    """:func:`explain_usage` for an invoice line (issued or upcoming) and the charge that rated
    it; None for every other kind of line (a base fee, a proration, late usage: their
    description and service period say it). ``parts`` are the (quantity, exact amount) of every
    line of the same charge and service period when the meter splits it by dimensions: the charge
    is rated on their sum and each part takes its share, so the working is the whole charge's, and
    the part's share is shown as the line bills it (rounded once, at the currency's minor unit)."""
    if kind != "usage" or charge is None or quantity is None:
        return None
    terms = charge_terms(charge)
    if not parts or len(parts) < 2:
        return explain_usage(terms, quantity, amount_exact, unit)
    whole = explain_usage(terms, sum((q for q, _ in parts), ZERO), sum((a for _, a in parts), ZERO), unit)
    if whole is None:
        return None
    share_billed = to_major(round_to_minor(amount_exact, currency), currency)
    return f"{_number(quantity)} of {whole}; this part's share = {_number(share_billed)}"
