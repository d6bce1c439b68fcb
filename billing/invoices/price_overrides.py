"""Per-customer prices as billing sees them: what an override does to the current period's
invoice. The dry run, the change itself and a retry all answer the same two invoices, composed as
the upcoming invoice is (usage so far), under the customer's overrides without and with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices.invoicing import DraftInvoice, compose_period
from billing.invoices.service import BillingWindow
from customers import price_overrides
from customers.calendar import current_period
from customers.price_overrides import PriceOverrideOutcome, PriceOverrideRequest
from customers.subscriptions import phases_of, version_on
from pricing.overrides import OverrideTimeline
from pricing.service import plan_version


@dataclass(frozen=True)
class OverrideEffect:
    """The current period's invoice so far, before and after the change, in minor units: the
    overridden charge's lines alone and the whole invoice (with the next period's fee in advance)."""

    period_start: datetime
    period_end: datetime
    currency: str
    charge_before: int
    charge_after: int
    invoice_before: int
    invoice_after: int


@dataclass(frozen=True)
class PriceOverrideResult:
    outcome: PriceOverrideOutcome
    effect: OverrideEffect


async def change_price_override(
    session: AsyncSession,
    request: PriceOverrideRequest,
    *,
    as_of: datetime,
    window: BillingWindow,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
) -> PriceOverrideResult:
    """:func:`customers.price_overrides.change_price_override`, with its effect on the current
    period's invoice (the dry run's answer)."""
    outcome = await price_overrides.change_price_override(
        session, request, as_of=as_of, backdate_limit=backdate_limit, dry_run=dry_run
    )
    subscription = outcome.subscription
    phases = await phases_of(session, subscription.id)
    version = await plan_version(session, version_on(phases, as_of))
    current = current_period(subscription, version.interval, as_of)
    start, end = current.start, current.end

    async def compose(overrides: OverrideTimeline) -> DraftInvoice:
        return await compose_period(
            session,
            subscription,
            phases,
            outcome.currency,
            start,
            end,
            late_since=as_of - window.late_window,
            count_events=False,
            overrides=overrides,
        )

    before, after = await compose(outcome.before), await compose(outcome.after)
    charge_id = outcome.charge.id

    def of_charge(draft: DraftInvoice) -> int:
        return sum(
            line.amount(draft.currency)
            for line in draft.lines
            if line.kind == "usage" and line.plan_charge_id == charge_id
        )

    effect = OverrideEffect(
        start, end, outcome.currency, of_charge(before), of_charge(after), before.subtotal, after.subtotal
    )
    return PriceOverrideResult(outcome, effect)
