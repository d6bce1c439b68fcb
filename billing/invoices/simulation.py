"""Price simulation: re-rate the real stored usage of the customers on the draft's plans, under
their current pricing and under the draft, period by period. Nothing is written.

Both sides are rated the same way so that the difference is the price change alone: the
customer's own billing periods (trial, calendar stubs, changes of interval), each on one pricing
(the current side uses the version in effect at the period's start), usage lines rounded as
invoices round them, the period's base fee and minimum spend for the share of it the
subscription was active (none in a trial, a pause or after a cancel; a stub's share of its full
period; a free trial's usage is not charged), and the minimum spend's true-up. A plan change
inside a period is not re-priced part by part, and late usage is not simulated. A charge billed in
advance (seats) is rated as its invoices bill it: the value at the period's start, plus a top-up
for each rise, times the share of the full period the subscription was active.

A customer's price overrides in effect now are kept on both sides, for every simulated period:
on the current side on the charge they override, on the draft's side on the draft charge at the
same position, on the same meter and ``where`` (the customer keeps their negotiated terms under
the new plan), as far as the draft charge's model uses them (an allowance, minimum or limit
always; a unit price only on a per-unit charge, tiers on tiered ones, a package on a package).

Both sides are list prices: a customer's discounts (:mod:`billing.discounts.coupons`) are left out of both,
so a coupon never shows as a price change (its invoices' ``discount`` lines say what it took off).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import charges_repository
from billing.invoices.advance import in_advance, whole_period_amounts
from billing.invoices.invoicing import usage_lines
from billing.invoices.minimum_spend import setting_at, true_up
from customers import service as customers
from customers.calendar import schedule_of
from customers.lifecycle import ACTIVE, cancel_moment
from customers.models import Subscription, SubscriptionPhase
from customers.periods import BillingPeriod
from customers.price_overrides import overrides_of
from customers.subscriptions import phase_parts, version_on
from ledger.errors import InvalidInput
from ledger.money import round_to_minor
from metering.usage import ChargeEvents, MeterUsage, charge_event_values, level_source, levels, usage
from pricing.advance import Reading
from pricing.models import Meter, PlanCharge, PlanVersion
from pricing.overrides import Terms, carried_over, overridden_charge
from pricing.proration import share_of_full_period, share_of_period
from pricing.service import DraftPlan, charges_of_version, draft_plans, plan_of_version, plan_version
from pricing.simulation import CustomerOutcome, SimulationSummary, summarize

MAX_SIMULATED_PERIODS = 24


@dataclass(frozen=True)
class PeriodSelection:
    """Whole billing periods that end in ``(start, end]``; or, with ``last``, each customer's
    last ``last`` periods that ended by ``end``."""

    start: datetime | None
    end: datetime
    last: int | None = None

    @classmethod
    def checked(cls, *, start: datetime | None, end: datetime, last: int | None, as_of: datetime) -> PeriodSelection:
        """A selection as a caller asks for it (GraphQL, the console through it, the CLI), refused
        the same way everywhere: 1 to 24 periods, or a start before the end (never past ``as_of``)."""
        if last is not None and not 1 <= last <= MAX_SIMULATED_PERIODS:
            raise InvalidInput(f"must be between 1 and {MAX_SIMULATED_PERIODS}", field="periods")
        if last is None and start is None:
            raise InvalidInput("give from (and to) or periods", field="from")
        if start is not None and start >= end:
            raise InvalidInput("must be before to", field="from")
        return cls(start=start, end=min(end, as_of), last=last)


async def _periods(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], selection: PeriodSelection
) -> list[BillingPeriod]:
    """The subscription's own periods the selection names, none starting after its cancel."""
    schedule = await schedule_of(session, subscription, phases)
    ends = cancel_moment(phases)
    since = subscription.started_at if selection.last is not None else selection.start
    assert since is not None
    closed = [p for p in schedule.periods_ending_within(since, selection.end) if ends is None or p.start < ends]
    if selection.last is not None:
        return closed[-selection.last :] if selection.last else []
    return closed


@dataclass(frozen=True)
class PeriodPricing:
    """One side of a simulated period: its charges, fee, minimum and conventions."""

    charges: list[tuple[PlanCharge, Meter]]
    version: PlanVersion
    minimum: Decimal | None  # the subscription's own minimum in effect now, else the version's


def _minimum(own: Decimal | None, version: PlanVersion) -> Decimal | None:
    """The subscription's own minimum in effect now is kept on both sides, as its prices are."""
    return own if own is not None else version.minimum_spend


def _rated_total(
    meter_usage: dict[uuid.UUID, MeterUsage],
    pricing: PeriodPricing,
    phases: list[SubscriptionPhase],
    period: BillingPeriod,
    currency: str,
    events: ChargeEvents,
    levels_read: tuple[dict[str, Decimal], list[Reading]],
) -> int:
    """What the period's invoice lines add up to in minor units: the fee, the seats billed in
    advance and the minimum for the active share, usage (none in a free trial), and the true-up
    if the spend falls short."""
    version, convention = pricing.version, pricing.version.proration
    active = Decimal(0)
    if not period.trial:
        active = sum(
            (
                share_of_period(part.start, part.end, period.full_start, period.full_end, convention)
                for part in phase_parts(phases, period.start, period.end)
                if part.status == ACTIVE
            ),
            Decimal(0),
        )
    fee = version.base_fee * active
    total, spend = round_to_minor(fee, currency), fee
    if not (period.trial and version.trial_usage == "free"):
        share = share_of_full_period(period.start, period.natural_end, period.full_start, period.full_end, convention)
        for charge, meter in pricing.charges:
            if in_advance(charge):
                known, readings = levels_read
                for amount in whole_period_amounts(
                    charge, meter, known, readings, period.start, period.end, convention
                ):
                    total += round_to_minor(amount * active, currency)
                    spend += amount * active
                continue
            for line in usage_lines(
                meter_usage[meter.id], charge, None, share=share, start=period.start, end=period.end, events=events
            ):
                total += line.amount(currency)
                spend += line.amount_exact
    minimum = pricing.minimum * active if pricing.minimum is not None and active else None
    return total + round_to_minor(true_up(minimum, spend), currency)


async def _kept_overrides(
    session: AsyncSession, draft: DraftPlan, version_id: uuid.UUID, overridden: dict[uuid.UUID, Terms]
) -> list[tuple[PlanCharge, Meter]]:
    """The draft's charges, each with the customer's override of the current charge it replaces
    (same position, meter and ``where``) carried over where the draft charge's model uses it."""
    if not overridden:
        return draft.charges
    current = {charge.position: charge for charge, _ in await charges_of_version(session, version_id)}
    kept = []
    for charge, meter in draft.charges:
        was = current.get(charge.position)
        if was is not None and was.id in overridden and (was.meter_id, was.where) == (charge.meter_id, charge.where):
            charge = overridden_charge(charge, carried_over(overridden[was.id], charge))
        kept.append((charge, meter))
    return kept


async def simulate_pricing(
    session: AsyncSession,
    *,
    catalog_text: str,
    selection: PeriodSelection,
    as_of: datetime,
    customer_external_ids: list[str] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_customer: Callable[[], None] | None = None,
) -> SimulationSummary:
    """Validate the draft (every problem is reported, nothing simulated, on any), then rate the
    periods of every subscribed customer whose current plan version the draft prices differently,
    each on the draft's prices in the customer's currency (a plan the draft no longer prices in it
    is left out, as subscribing to it would be refused)."""
    drafts = await draft_plans(session, catalog_text, as_of=as_of)
    subscribed = await customers.subscribed_customers(session, customer_external_ids)
    plan_key, changed = {}, set()
    for version_id in {subscription.version_at(as_of) for _, subscription in subscribed}:
        currency = (await plan_version(session, version_id)).currency
        plan_key[version_id] = ((await plan_of_version(session, version_id)).key, currency)
        candidate = drafts.get(plan_key[version_id])
        if candidate and candidate.version.pricing_hash != (await plan_version(session, version_id)).pricing_hash:
            changed.add(version_id)
    affected = [
        (customer, subscription) for customer, subscription in subscribed if subscription.version_at(as_of) in changed
    ]
    phases = await customers.phases_of_subscriptions(session, [subscription.id for _, subscription in affected])
    if on_start:
        on_start(len(affected))
    outcomes = []
    for customer, subscription in affected:
        draft: DraftPlan = drafts[plan_key[subscription.version_at(as_of)]]
        overridden = (await overrides_of(session, subscription)).in_effect_now(as_of)
        draft_charges = await _kept_overrides(session, draft, subscription.version_at(as_of), overridden)
        own = setting_at(await charges_repository.minimum_spends_of(session, customer.id, subscription.id), as_of)
        own_minimum = own.amount if own is not None else None
        customer_phases = phases[subscription.id]
        current_total = simulated_total = 0
        periods = await _periods(session, subscription, customer_phases, selection)
        for period in periods:
            start, end = period.start, period.end
            version_id = version_on(customer_phases, start)
            version = await plan_version(session, version_id)
            current_charges = [
                (overridden_charge(charge, overridden.get(charge.id)), meter)
                for charge, meter in await charges_of_version(session, version_id)
            ]
            meters = {meter.id: meter for _, meter in [*current_charges, *draft_charges]}
            found = {u.meter.id: u for u in await usage(session, customer.id, list(meters.values()), start, end)}
            events = await charge_event_values(session, customer.id, [*current_charges, *draft.charges], start, end)
            sources = [
                level_source(meter, dict(charge.where))
                for charge, meter in [*current_charges, *draft_charges]
                if in_advance(charge)
            ]
            levels_read = await levels(session, customer.id, sources, start, end) if sources else ({}, [])
            current = PeriodPricing(current_charges, version, _minimum(own_minimum, version))
            simulated = PeriodPricing(draft_charges, draft.version, _minimum(own_minimum, draft.version))
            current_total += _rated_total(
                found, current, customer_phases, period, customer.currency, events, levels_read
            )
            simulated_total += _rated_total(
                found, simulated, customer_phases, period, customer.currency, events, levels_read
            )
        outcomes.append(
            CustomerOutcome(
                customer_key=customer.external_id,
                name=customer.name,
                plan_key=draft.key,
                currency=customer.currency,
                periods=len(periods),
                current=current_total,
                simulated=simulated_total,
            )
        )
        if on_customer:
            on_customer()
    return summarize(outcomes)
