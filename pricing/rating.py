"""Rating: a charge's terms and a quantity give an exact amount. Pure, Decimal throughout.

Rules (the catalog's charge models):
- the ``included`` allowance is taken off first: ``billable = max(quantity - included, 0)``;
- ``per_unit``: billable × unit price;
- ``graduated``: each tier prices the billable units that fall inside it (``up_to`` is inclusive),
  and a tier's ``flat_fee`` is added once when billable units reach into it;
- ``volume``: the tier the billable quantity reaches prices every billable unit, plus that tier's
  ``flat_fee`` (Stripe's ``flat_amount``);
- ``stair_step``: the ``flat_fee`` of the tier (step) the billable quantity falls in, whatever the
  quantity inside the step;
- ``package``: every started package of ``package_size`` units costs ``package_price``
  (``rounding = "up"``, the default), or only whole packages do (``rounding = "down"``: a partial
  package is free);
- ``percentage``: ``rate`` percent of the value (a sum meter's values), plus ``fixed_fee`` per
  event; the first ``free_events`` events and the first ``included`` of the value are free, and
  each paying event's fee is kept between ``per_event_minimum`` and ``per_event_maximum``
  (:func:`rate_events`, which reads the events one by one; Lago's percentage model);
- ``minimum``: the charge is never below it for a period.
Nothing used, nothing owed: a tier's flat fee or a step's price is not a fee for showing up (zero
billable units cost nothing unless a ``minimum`` says otherwise).
Nothing is rounded here: amounts keep every digit until an invoice line rounds them once
(``ledger.money.round_to_minor``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext

ZERO = Decimal(0)
HUNDRED = Decimal(100)
# Significant digits of every rating operation: a 30-digit price times a 10^12 quantity with
# decimals stays exact (Python's default of 28 would round it silently).
RATING_PRECISION = 80
SHARE_QUANTUM = Decimal(1).scaleb(-12)


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: no upper bound
    unit_price: Decimal
    flat_fee: Decimal = ZERO  # once per period for a tier the billable quantity reaches


@dataclass(frozen=True)
class ChargeTerms:
    model: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal = ZERO
    minimum: Decimal | None = None
    rounding: str = "up"  # package: "up" (a started package costs a whole one) or "down"
    percentage_rate: Decimal | None = None  # percentage: percent of the value, 0 to 100
    fixed_fee: Decimal = ZERO  # percentage: per paying event
    free_events: int | None = None  # percentage: the first events that cost nothing
    per_event_minimum: Decimal | None = None
    per_event_maximum: Decimal | None = None


def needs_events(terms: ChargeTerms) -> bool:
    """Whether the charge can only be rated from its events one by one (a fixed fee per event,
    free events, or a per-event minimum or maximum); otherwise the period's quantity suffices."""
    return terms.model == "percentage" and bool(
        terms.fixed_fee
        or terms.free_events
        or terms.per_event_minimum is not None
        or terms.per_event_maximum is not None
    )


def rate(terms: ChargeTerms, quantity: Decimal) -> Decimal:
    if needs_events(terms):
        raise ValueError("this percentage charge is rated from its events: use rate_events")
    with localcontext(prec=RATING_PRECISION):
        billable = max(quantity - terms.included, ZERO)
        amount = _usage_amount(terms, billable)
        return _floor(terms, amount)


def rate_events(terms: ChargeTerms, values: Iterable[Decimal]) -> Decimal:
    """A percentage charge rated event by event, ``values`` in the order the events happened.

    The free part of the value is the first ``included`` of the running total, and only among the
    first ``free_events`` events when that is set (whichever runs out first ends it; with only
    ``free_events``, those events are free whole). An event entirely inside the free part is a
    free event: no fixed fee, no per-event minimum. Every other event pays ``rate`` percent of its
    value outside the free part, plus ``fixed_fee``, that fee kept between the per-event minimum
    and maximum. Without per-event terms this equals :func:`rate` on the events' total. One pass
    in constant memory, so the events may be streamed."""
    if terms.model != "percentage":
        raise ValueError("only a percentage charge is rated from its events")
    with localcontext(prec=RATING_PRECISION):
        rate_of_value = _percent(terms)
        anything_free = bool(terms.included) or bool(terms.free_events)
        cap = terms.included if terms.included else None  # None: no cap on the value
        total = amount = ZERO
        for index, value in enumerate(values):
            before, total = total, total + value
            in_free_events = not terms.free_events or index < terms.free_events
            free = ZERO
            if anything_free and in_free_events:
                free = value if cap is None else min(total, cap) - min(before, cap)
            if anything_free and free == value:
                continue  # a free event
            fee = (value - free) * rate_of_value + terms.fixed_fee
            if terms.per_event_minimum is not None:
                fee = max(fee, terms.per_event_minimum)
            if terms.per_event_maximum is not None:
                fee = min(fee, terms.per_event_maximum)
            amount += fee
        return _floor(terms, amount)


def _percent(terms: ChargeTerms) -> Decimal:
    assert terms.percentage_rate is not None
    return terms.percentage_rate / HUNDRED


def _floor(terms: ChargeTerms, amount: Decimal) -> Decimal:
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
                amount += (upper - lower) * tier.unit_price + tier.flat_fee
            if tier.up_to is None or billable <= tier.up_to:
                break
            lower = tier.up_to
        return amount
    if terms.model in ("volume", "stair_step"):
        if billable <= 0:
            return ZERO
        tier = tier_reached(terms.tiers, billable)
        return tier.flat_fee if terms.model == "stair_step" else billable * tier.unit_price + tier.flat_fee
    if terms.model == "package":
        assert terms.package_size is not None and terms.package_price is not None
        rounding = ROUND_FLOOR if terms.rounding == "down" else ROUND_CEILING
        packages = (billable / terms.package_size).to_integral_value(rounding=rounding)
        return packages * terms.package_price
    if terms.model == "percentage":
        return billable * _percent(terms)
    raise ValueError(f"unknown charge model {terms.model!r}")


def tier_reached(tiers: Sequence[Tier], quantity: Decimal) -> Tier:
    """The first tier whose inclusive bound holds the quantity (the last one is unbounded)."""
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return tier
    raise ValueError("tiers must end with an unbounded tier")


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
