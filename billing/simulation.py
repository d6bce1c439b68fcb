"""Price simulation: re-rate the real stored usage of the customers on the draft's plans, under
their current pricing and under the draft, period by period. Nothing is written.

Both sides are rated the same way so that the difference is the price change alone: whole
billing periods, each on one pricing (the current side uses the version in effect at the
period's start), usage lines rounded as invoices round them, plus the period's base fee.
Prorations and late usage are not simulated.

A customer's price overrides in effect now are kept on both sides, for every simulated period:
on the current side on the charge they override, on the draft's side on the draft charge at the
same position, on the same meter and ``where`` (the customer keeps their negotiated terms under
the new plan), as far as the draft charge's model uses them (an allowance, minimum or limit
always; a unit price only on a per-unit charge, tiers on tiered ones, a package on a package).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoicing import usage_lines
from customers import service as customers
from customers.periods import periods_ending_within
from customers.price_overrides import overrides_of
from customers.subscriptions import version_on
from ledger.money import round_to_minor
from metering.usage import ChargeEvents, MeterUsage, charge_event_values, usage
from pricing.models import Meter, PlanCharge
from pricing.overrides import Terms, carried_over, overridden_charge
from pricing.service import DraftPlan, charges_of_version, draft_plans, plan_of_version, plan_version
from pricing.simulation import CustomerOutcome, SimulationSummary, summarize


@dataclass(frozen=True)
class PeriodSelection:
    """Whole billing periods that end in ``(start, end]``; or, with ``last``, each customer's
    last ``last`` periods that ended by ``end``."""

    start: datetime | None
    end: datetime
    last: int | None = None


def _periods(anchor: datetime, interval: str, selection: PeriodSelection) -> list[tuple[datetime, datetime]]:
    if selection.last is not None:
        closed = periods_ending_within(anchor, interval, anchor, selection.end)
        return closed[-selection.last :] if selection.last else []
    assert selection.start is not None
    return periods_ending_within(anchor, interval, selection.start, selection.end)


def _rated_total(
    meter_usage: dict[uuid.UUID, MeterUsage],
    charges: list[tuple[PlanCharge, Meter]],
    base_fee_minor: int,
    currency: str,
    start: datetime,
    end: datetime,
    events: ChargeEvents,
) -> int:
    total = base_fee_minor
    for charge, meter in charges:
        lines = usage_lines(meter_usage[meter.id], charge, None, share=Decimal(1), start=start, end=end, events=events)
        for line in lines:
            total += line.amount(currency)
    return total


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
    periods of every subscribed customer whose current plan version the draft prices differently."""
    drafts = await draft_plans(session, catalog_text, as_of=as_of)
    subscribed = await customers.subscribed_customers(session, customer_external_ids)
    plan_key, changed = {}, set()
    for version_id in {subscription.version_at(as_of) for _, subscription in subscribed}:
        plan_key[version_id] = (await plan_of_version(session, version_id)).key
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
        current_version = await plan_version(session, subscription.version_at(as_of))
        overridden = (await overrides_of(session, subscription)).in_effect_now(as_of)
        draft_charges = await _kept_overrides(session, draft, subscription.version_at(as_of), overridden)
        current_total = simulated_total = 0
        periods = _periods(subscription.started_at, current_version.interval, selection)
        for start, end in periods:
            version_id = version_on(phases[subscription.id], start)
            version = await plan_version(session, version_id)
            current_charges = [
                (overridden_charge(charge, overridden.get(charge.id)), meter)
                for charge, meter in await charges_of_version(session, version_id)
            ]
            meters = {meter.id: meter for _, meter in [*current_charges, *draft_charges]}
            found = {u.meter.id: u for u in await usage(session, customer.id, list(meters.values()), start, end)}
            events = await charge_event_values(session, customer.id, [*current_charges, *draft.charges], start, end)
            currency = customer.currency
            current_total += _rated_total(
                found, current_charges, round_to_minor(version.base_fee, currency), currency, start, end, events
            )
            simulated_total += _rated_total(
                found, draft_charges, round_to_minor(draft.version.base_fee, currency), currency, start, end, events
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
