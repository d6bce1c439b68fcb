"""Plan changes as billing sees them: what a change costs in base fees depends on what was billed
in advance for the period, which only billing knows. The dry run, the change's audit and the
period's invoice all work it out here, from the phases as they stand, so they agree whatever the
order in which changes and billing runs happen."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import repository
from customers.models import Subscription, SubscriptionPhase
from customers.subscriptions import PlanChangeOutcome, PlanChangeRequest, phase_parts
from customers.subscriptions import change_plan as change_subscription_plan
from pricing.proration import FeePhase, Proration, period_fee_prorations
from pricing.service import plan_name_of_version, plan_version


async def period_prorations(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    start: datetime,
    end: datetime,
) -> list[Proration]:
    """The base-fee prorations of ``[start, end)``: the phases' fees against the fee billed in
    advance for the period, or, before that invoice is issued, the fee it will bill (the first
    phase's, so nothing is prorated at the period's start)."""
    fee_phases = []
    for part in phase_parts(phases, start, end):
        version = await plan_version(session, part.version_id)
        fee = version.base_fee if part.status == "ACTIVE" else Decimal(0)  # paused or canceled: no base fee
        plan = await plan_name_of_version(session, part.version_id)
        fee_phases.append(
            FeePhase(part.start, part.version_id, plan, fee, status=part.status, proration=version.proration)
        )
    billed = None
    if subscription.invoiced_through is not None and subscription.invoiced_through >= start:
        billed_version_id, billed_fee = await repository.base_fee_billed(session, subscription.customer_id, start)
        plan, proration = "no plan", fee_phases[0].proration
        if billed_version_id:
            plan = await plan_name_of_version(session, billed_version_id)
            proration = (await plan_version(session, billed_version_id)).proration
        billed = FeePhase(start, billed_version_id, plan, billed_fee, proration=proration)
    return period_fee_prorations(billed=billed, phases=fee_phases, period_start=start, period_end=end)


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
        return await period_prorations(session, subscription, phases, start, end)

    return await change_subscription_plan(
        session, request, as_of=as_of, prorate=prorate, backdate_limit=backdate_limit, dry_run=dry_run
    )
