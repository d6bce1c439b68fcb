"""Lifecycle requests as billing sees them: what a cancel, a pause or an unpause costs, and the
final invoice of an immediate cancel, issued in the request's own transaction.

A pause or an unpause prorates the base fee of the period it falls in (worked out, as for a plan
change, from the phases and the fee billed in advance; the amounts land on the period's invoice).
An immediate cancel closes the subscription at once: every invoice still due is issued now, the
billing grace waived, the last one for the canceled period (its usage up to the moment, the
unused base fee credited, no next fee). A cancel at the period's end is issued by the billing run
at the period's end; its dry run answers that final invoice as it stands now.

A dry run does everything in a savepoint, issuing included, and rolls it back: what it answers is
what the request would post, by construction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import repository
from billing.invoices.advance import seat_prorations
from billing.invoices.invoicing import DraftInvoice, issue, next_due
from billing.invoices.plan_changes import period_prorations
from billing.invoices.service import BillingWindow, UpcomingInvoice, upcoming_invoice
from billing.invoices.taxation import taxes_of
from billing.models import Invoice
from customers.lifecycle import (
    CANCEL,
    PAUSE,
    UNPAUSE,
    LifecycleChange,
    LifecycleRequest,
    plan_lifecycle_change,
    record_lifecycle_change,
)
from customers.models import Subscription, SubscriptionEvent
from customers.subscriptions import phases_of, proration_record
from pricing.proration import Proration
from pricing.service import plan_version


@dataclass(frozen=True)
class LifecycleOutcome:
    subscription: Subscription  # as the request leaves it (a copy outliving a dry run's rollback)
    effective_at: datetime
    currency: str
    prorations: list[Proration]  # of the base fee of the period the request falls in
    final_invoice: UpcomingInvoice | None  # a cancel's: issued (immediately) or as it stands (period end)
    issued: list[Invoice]  # what an immediate cancel issued (none for a dry run)
    event: SubscriptionEvent | None  # the audit; None for a dry run


def _prorates(request: LifecycleRequest) -> bool:
    return request.kind in (PAUSE, UNPAUSE) or (request.kind == CANCEL and request.timing == "IMMEDIATELY")


async def change_lifecycle(
    session: AsyncSession,
    request: LifecycleRequest,
    *,
    as_of: datetime,
    late_window: timedelta,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
    trace_id: str | None = None,
) -> LifecycleOutcome:
    """Cancel, resume, pause or unpause (``request.kind``) in the caller's transaction; the caller
    commits. ``late_window`` is how far back late usage is looked for (the billing run's)."""
    change = await plan_lifecycle_change(session, request, as_of=as_of, backdate_limit=backdate_limit, dry_run=dry_run)
    currency = (await plan_version(session, change.subscription.plan_version_id)).currency
    if change.replayed is not None:
        return await _replayed(session, change, change.replayed, currency, as_of=as_of, late_window=late_window)
    savepoint = await session.begin_nested() if dry_run else None
    try:
        return await _apply(
            session, request, change, currency, as_of=as_of, late_window=late_window, dry_run=dry_run, trace_id=trace_id
        )
    finally:
        if savepoint is not None:
            await savepoint.rollback()


async def _apply(
    session: AsyncSession,
    request: LifecycleRequest,
    change: LifecycleChange,
    currency: str,
    *,
    as_of: datetime,
    late_window: timedelta,
    dry_run: bool,
    trace_id: str | None,
) -> LifecycleOutcome:
    subscription = change.subscription
    prorations: list[Proration] = []
    if _prorates(request):
        prorations = await period_prorations(
            session, subscription, change.phases, change.period_start, change.period_end
        )
        prorations += await seat_prorations(session, subscription, change.phases, change.period_start)
    event = await record_lifecycle_change(
        session,
        request,
        change,
        as_of=as_of,
        prorations=[proration_record(p) for p in prorations],
        dry_run=dry_run,
    )
    final: UpcomingInvoice | None = None
    issued: list[Invoice] = []
    if request.kind == CANCEL and request.timing == "IMMEDIATELY":
        finals = await _issue_due(
            session, subscription, currency, as_of=as_of, late_window=late_window, trace_id=trace_id
        )
        issued = [invoice for invoice, _ in finals]
        last_invoice, last_draft = finals[-1]
        amounts = [line.amount(last_draft.currency) for line in last_draft.lines]
        taxes = await taxes_of(session, last_invoice.customer_id, last_invoice.currency, amounts)
        final = UpcomingInvoice(last_draft, last_invoice.credits_applied, tuple(taxes))
        event.invoice_ids = [str(invoice.id) for invoice in issued]
        session.add(event)
        await session.flush()
        await session.refresh(subscription)  # the billing cursor moved with the invoices
    elif request.kind == CANCEL:
        final = await upcoming_invoice(
            session,
            request.customer_id,
            as_of=as_of,
            window=BillingWindow(grace=timedelta(0), late_window=late_window),
            subscription_id=subscription.id,
        )
    return LifecycleOutcome(
        subscription=Subscription(**subscription.model_dump()),
        effective_at=change.effective_at,
        currency=currency,
        prorations=prorations,
        final_invoice=final,
        issued=[] if dry_run else issued,
        event=None if dry_run else event,
    )


async def _issue_due(
    session: AsyncSession,
    canceled: Subscription,
    currency: str,
    *,
    as_of: datetime,
    late_window: timedelta,
    trace_id: str | None,
) -> list[tuple[Invoice, DraftInvoice]]:
    """Issue every invoice the canceled subscription is due now, the final one last (no grace:
    the cancel closes them). The caller holds the subscription's lock."""
    issued: list[tuple[Invoice, DraftInvoice]] = []
    while True:
        [subscription] = await repository.subscriptions_to_bill(session, canceled.customer_id, canceled.id)
        phases = await phases_of(session, subscription.id)
        due = await next_due(
            session, subscription, phases, currency, as_of=as_of, grace=timedelta(0), late_window=late_window
        )
        if due is None:
            return issued
        invoice = await issue(session, due.draft, as_of=as_of, invoiced_through=due.invoiced_through, trace_id=trace_id)
        issued.append((invoice, due.draft))


def _proration_of_record(record: dict[str, str | None]) -> Proration:
    starts_at, version_id = record.get("starts_at"), record.get("plan_version_id")
    return Proration(
        str(record["kind"]),
        str(record["description"]),
        Decimal(str(record["amount"])),
        datetime.fromisoformat(starts_at) if starts_at else None,
        uuid.UUID(version_id) if version_id else None,
    )


async def _replayed(
    session: AsyncSession,
    change: LifecycleChange,
    event: SubscriptionEvent,
    currency: str,
    *,
    as_of: datetime,
    late_window: timedelta,
) -> LifecycleOutcome:
    """A retried request's first outcome: its prorations and the invoices it issued; a scheduled
    cancel's final invoice as it stands now."""
    found = await repository.invoices_by_id(session, [uuid.UUID(i) for i in event.invoice_ids])
    issued = sorted(found.values(), key=lambda invoice: invoice.number)
    final = None
    if event.kind == CANCEL and event.status == "scheduled":
        window = BillingWindow(grace=timedelta(0), late_window=late_window)
        final = await upcoming_invoice(
            session, event.customer_id, as_of=as_of, window=window, subscription_id=change.subscription.id
        )
    return LifecycleOutcome(
        subscription=Subscription(**change.subscription.model_dump()),
        effective_at=event.effective_at,
        currency=currency,
        prorations=[_proration_of_record(p) for p in event.prorations],
        final_invoice=final,
        issued=issued,
        event=event,
    )
