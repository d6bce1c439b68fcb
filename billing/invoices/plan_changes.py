"""Plan changes as billing sees them: what a change costs in base fees depends on what was billed
in advance for the period, which only billing knows. The dry run, the change's audit and the
period's invoice all work it out here, from the phases as they stand, so they agree whatever the
order in which changes and billing runs happen."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import repository
from billing.invoices.advance import seat_prorations
from customers.calendar import schedule_of
from customers.models import Subscription, SubscriptionPhase
from customers.periods import BillingPeriod
from customers.subscriptions import PlanChangeOutcome, PlanChangeRequest, phase_parts, version_on
from customers.subscriptions import change_plan as change_subscription_plan
from pricing.proration import FeePhase, Proration, period_fee_prorations, share_of_full_period
from pricing.service import plan_name_of_version, plan_version


async def period_prorations(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    start: datetime,
    end: datetime,
    *,
    period: BillingPeriod | None = None,
) -> list[Proration]:
    """The base-fee prorations of ``[start, end)``: the phases' fees against the fee billed in
    advance for the period, or, before that invoice is issued, the fee it will bill (the first
    phase's, so nothing is prorated at the period's start). A stub's fees are its share of them; a
    trial bills no fee, so nothing is prorated in it; a period that a change of interval cut short
    credits the unused rest of what was billed for it (the new calendar's first period is billed
    in advance, on the same invoice, as its base fee)."""
    if period is None:
        period = (await schedule_of(session, subscription, phases)).period_containing(start)
    if period.trial:
        return []
    fee_phases = []
    for part in phase_parts(phases, start, period.end):
        version = await plan_version(session, part.version_id)
        scale = share_of_full_period(
            period.start, period.natural_end, period.full_start, period.full_end, version.proration
        )
        fee = version.base_fee * scale if part.status == "ACTIVE" else Decimal(0)  # paused or canceled: no fee
        plan = await plan_name_of_version(session, part.version_id)
        fee_phases.append(
            FeePhase(part.start, part.version_id, plan, fee, status=part.status, proration=version.proration)
        )
    if period.cut_short:
        convention = fee_phases[-1].proration
        fee_phases.append(FeePhase(period.end, None, "the new billing interval", Decimal(0), proration=convention))
    billed = None
    if subscription.invoiced_through is not None and subscription.invoiced_through >= start:
        billed_version_id, billed_fee = await repository.base_fee_billed(session, subscription, start)
        plan, proration = "no plan", fee_phases[0].proration
        if billed_version_id:
            plan = await plan_name_of_version(session, billed_version_id)
            proration = (await plan_version(session, billed_version_id)).proration
        billed = FeePhase(start, billed_version_id, plan, billed_fee, proration=proration)
    return period_fee_prorations(billed=billed, phases=fee_phases, period_start=start, period_end=period.natural_end)


async def first_fee_of_calendar(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], at: datetime
) -> list[Proration]:
    """What a change of interval at ``at`` charges in advance: the new calendar's first period's
    base fee (its share for a stub), shown beside the credit of the period it cuts short."""
    schedule = await schedule_of(session, subscription, phases)
    period = schedule.period_containing(at)
    version_id = version_on(phases, at)
    version = await plan_version(session, version_id)
    if period.trial or not version.base_fee:
        return []
    share = share_of_full_period(
        period.start, period.natural_end, period.full_start, period.full_end, version.proration
    )
    until = period.natural_end.strftime("%Y-%m-%d %H:%M UTC")
    return [
        Proration(
            "charge_new_period",
            f"{await plan_name_of_version(session, version_id)} base fee in advance "
            f"({at.strftime('%Y-%m-%d %H:%M UTC')} to {until})",
            version.base_fee * share,
            at,
            version_id,
        )
    ]


async def change_plan(
    session: AsyncSession,
    request: PlanChangeRequest,
    *,
    as_of: datetime,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
) -> PlanChangeOutcome:
    """:func:`customers.subscriptions.change_plan`, its prorations worked out as the invoice will.
    ``backdate_limit`` (the API's TALLY_BACKDATE_MAX_DAYS) bounds how far back ``at`` may lie."""

    async def prorate(
        subscription: Subscription, phases: list[SubscriptionPhase], start: datetime, end: datetime
    ) -> list[Proration]:
        prorations = await period_prorations(session, subscription, phases, start, end)
        prorations += await seat_prorations(session, subscription, phases, start)
        new_calendar = next((p for p in phases if start < p.starts_at < end and p.billing_anchor is not None), None)
        if new_calendar is not None:
            prorations += await first_fee_of_calendar(session, subscription, phases, new_calendar.starts_at)
        return prorations

    return await change_subscription_plan(
        session, request, as_of=as_of, prorate=prorate, backdate_limit=backdate_limit, dry_run=dry_run
    )
