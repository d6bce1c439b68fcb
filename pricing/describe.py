"""A charge's terms in one line of words, for people (the console's pricing page, the API's
``Charge.summary``). Pure; quantities and prices are plain decimals with thousands separators,
prices followed by the plan's currency (``0.5 USD per started package of 1,000,000``)."""

from __future__ import annotations

from decimal import Decimal

from pricing.rating import ChargeTerms, Tier


def _plain(value: Decimal) -> str:
    normalized = value.normalize()
    return format(normalized, ",f") if normalized != 0 else "0"


def _tier_ranges(tiers: tuple[Tier, ...]) -> list[tuple[str, Tier]]:
    ranges, lower = [], None
    for tier in tiers:
        if tier.up_to is None:
            label = f"above {_plain(lower)}" if lower is not None else "any quantity"
        elif lower is None:
            label = f"up to {_plain(tier.up_to)}"
        else:
            label = f"{_plain(lower)} to {_plain(tier.up_to)}"
        ranges.append((label, tier))
        lower = tier.up_to
    return ranges


def _priced_tiers(tiers: tuple[Tier, ...], currency: str) -> str:
    parts = []
    for label, tier in _tier_ranges(tiers):
        text = f"{label} at {_plain(tier.unit_price)} {currency} each"
        if tier.flat_fee:
            text += f" + {_plain(tier.flat_fee)} {currency} flat"
        parts.append(text)
    return "; ".join(parts)


def describe_charge(terms: ChargeTerms, currency: str) -> str:
    """E.g. ``graduated, each tier prices its own units: up to 500 at 0 USD each; 500 to 2,000 at
    0.04 USD each + 10 USD flat; 500 included``."""
    if terms.model == "per_unit":
        assert terms.unit_price is not None
        text = f"{_plain(terms.unit_price)} {currency} per unit"
    elif terms.model == "graduated":
        text = f"graduated, each tier prices its own units: {_priced_tiers(terms.tiers, currency)}"
    elif terms.model == "volume":
        text = f"volume, the tier reached prices every unit: {_priced_tiers(terms.tiers, currency)}"
    elif terms.model == "stair_step":
        steps = "; ".join(f"{label}: {_plain(tier.flat_fee)} {currency}" for label, tier in _tier_ranges(terms.tiers))
        text = f"stair steps, one price for the step reached: {steps}"
    elif terms.model == "package":
        assert terms.package_size is not None and terms.package_price is not None
        size, price = _plain(terms.package_size), f"{_plain(terms.package_price)} {currency}"
        if terms.rounding == "down":
            text = f"{price} per whole package of {size} (a partial package is free)"
        else:
            text = f"{price} per started package of {size}"
    elif terms.model == "percentage":
        assert terms.percentage_rate is not None
        text = f"{_plain(terms.percentage_rate)}% of the value"
        if terms.fixed_fee:
            text += f" + {_plain(terms.fixed_fee)} {currency} per event"
        if terms.free_events:
            text += f"; first {terms.free_events:,} events free"
        bounds = [
            f"at least {_plain(terms.per_event_minimum)} {currency}" if terms.per_event_minimum is not None else "",
            f"at most {_plain(terms.per_event_maximum)} {currency}" if terms.per_event_maximum is not None else "",
        ]
        if any(bounds):
            text += "; each event " + " and ".join(b for b in bounds if b)
    else:
        text = terms.model
    if terms.included:
        free = "of the value free" if terms.model == "percentage" else "included"
        text += f"; {_plain(terms.included)} {free}"
    if terms.minimum is not None:
        text += f"; at least {_plain(terms.minimum)} {currency} a period"
    return text
