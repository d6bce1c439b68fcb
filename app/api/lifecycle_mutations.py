"""The mutations of a subscription's lifecycle: cancel (now or at the period's end), resume a
scheduled cancel, pause and unpause. Their payloads name the subscription, so they sit above
:mod:`app.api.customers` and :mod:`app.api.lifecycle`, and neither imports the other back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession
from strawberry.types import Info

from app.api.billing import Invoice, InvoiceLine, InvoiceTaxLine, Proration, UpcomingInvoice, proration_of, tax_note
from app.api.common import UserError, money, run_mutation
from app.api.customers import Subscription
from app.api.lifecycle import CancelTiming, SubscriptionEvent
from app.api.permissions import requires
from app.api.scope import WHICH_SUBSCRIPTION, customer_of, subscription_id_of
from app.auth import Capability
from app.telemetry import current_trace_id
from billing.invoices import service as billing
from billing.subscriptions.lifecycle import LifecycleOutcome, change_lifecycle
from customers.lifecycle import CANCEL, PAUSE, RESUME, UNPAUSE, LifecycleRequest


@strawberry.input
class CancelSubscriptionInput:
    customer_id: strawberry.ID
    timing: CancelTiming
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    reason: str | None = strawberry.field(default=None, description="Kept in the audit; at most 500 characters.")
    at: datetime | None = strawberry.field(
        default=None,
        description="IMMEDIATELY only: when it ends, inside the current period and not in the future; defaults to now.",
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the final invoice; change nothing.")


@strawberry.input
class ResumeSubscriptionInput:
    customer_id: strawberry.ID
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)


@strawberry.input
class PauseSubscriptionInput:
    customer_id: strawberry.ID
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    at: datetime | None = strawberry.field(
        default=None, description="Inside the current period and not in the future; defaults to now."
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the prorations; change nothing.")


@strawberry.input
class UnpauseSubscriptionInput(PauseSubscriptionInput):
    pass


@strawberry.type
class CancelSubscriptionPayload:
    subscription: Subscription | None
    effective_at: datetime | None = strawberry.field(description="When the subscription ends.")
    prorations: list[Proration] = strawberry.field(description="The unused base fee credited (IMMEDIATELY).")
    final_invoice: UpcomingInvoice | None = strawberry.field(
        description="The final invoice: the one issued (IMMEDIATELY), or, for a dry run or a cancel at the "
        "period's end, the one it would issue as things stand now."
    )
    issued_invoices: list[Invoice] = strawberry.field(
        description="What the cancel issued at once: the final invoice, after any invoice still due "
        "(the billing grace is waived). Empty for a dry run and a cancel at the period's end."
    )
    event: SubscriptionEvent | None = strawberry.field(description="The audit; null for a dry run.")
    user_errors: list[UserError]


@strawberry.type
class ResumeSubscriptionPayload:
    subscription: Subscription | None
    event: SubscriptionEvent | None
    user_errors: list[UserError]


@strawberry.type
class PauseSubscriptionPayload:
    subscription: Subscription | None
    effective_at: datetime | None
    prorations: list[Proration] = strawberry.field(
        description="The base fee of the period, prorated: a pause credits the unused part, an unpause "
        "charges the rest of the period; they land on the period's invoice."
    )
    event: SubscriptionEvent | None = strawberry.field(description="The audit; null for a dry run.")
    user_errors: list[UserError]


async def _final_invoice(session: AsyncSession, outcome: LifecycleOutcome) -> UpcomingInvoice | None:
    """The final invoice's amounts: from its draft, or, for a retried cancel, from the invoice issued."""
    if outcome.final_invoice is not None:
        return UpcomingInvoice.from_preview(outcome.final_invoice)
    if not outcome.issued:
        return None
    invoice = outcome.issued[-1]
    rows = (await billing.lines_of(session, [invoice.id]))[invoice.id]
    currency = invoice.currency
    tax_lines = [
        InvoiceTaxLine.from_line(line, currency)
        for line in (await billing.tax_lines_of(session, [invoice.id]))[invoice.id]
    ]
    return UpcomingInvoice(
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        subtotal=money(invoice.subtotal, currency),
        credits_applied=money(invoice.credits_applied, currency),
        total=money(invoice.total, currency),
        amount_due=money(invoice.amount_due, currency),
        lines=[InvoiceLine.from_draft(row, currency, row.amount, row.position, (invoice, row), rows) for row in rows],
        tax=money(invoice.tax_amount, currency),
        tax_lines=tax_lines,
        tax_note=tax_note(tax_lines),
    )


T = TypeVar("T")


async def _lifecycle(
    info: Info,
    customer_id: strawberry.ID,
    build: Callable[[uuid.UUID], LifecycleRequest],
    payload: Callable[[LifecycleOutcome], Awaitable[T]],
    *,
    dry_run: bool,
) -> tuple[T | None, list[UserError]]:
    context = info.context
    settings = context.settings

    async def run() -> T:
        customer = await customer_of(info, customer_id)
        outcome = await change_lifecycle(
            context.session,
            build(customer.id),
            as_of=context.now(),
            late_window=timedelta(days=settings.event_max_age_days),
            backdate_limit=timedelta(days=settings.backdate_max_days),
            dry_run=dry_run,
            trace_id=current_trace_id(),
        )
        # Built before the transaction ends: a dry run rolls back, which expires the rows.
        return await payload(outcome)

    return await run_mutation(info, run, commit=not dry_run)


def _subscription(outcome: LifecycleOutcome, as_of: datetime) -> Subscription:
    return Subscription.from_model(outcome.subscription, as_of)


def _event(outcome: LifecycleOutcome, as_of: datetime) -> SubscriptionEvent | None:
    return SubscriptionEvent.from_model(outcome.event, outcome.currency, as_of) if outcome.event else None


def _prorations(outcome: LifecycleOutcome) -> list[Proration]:
    return [proration_of(p.description, p.amount, outcome.currency) for p in outcome.prorations]


@strawberry.type
class LifecycleMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="End a subscription now (a final invoice at once: usage to the moment, the unused base fee "
        "credited) or at the period's end (revocable until then by resumeSubscription).",
    )
    async def cancel_subscription(self, info: Info, input: CancelSubscriptionInput) -> CancelSubscriptionPayload:
        context = info.context

        def build(customer_id: uuid.UUID) -> LifecycleRequest:
            return LifecycleRequest(
                customer_id=customer_id,
                kind=CANCEL,
                idempotency_key=input.idempotency_key,
                actor=context.viewer.actor,
                timing=input.timing.value,
                at=input.at,
                reason=input.reason,
                subscription_id=subscription_id_of(input.subscription_id),
            )

        async def payload(outcome: LifecycleOutcome) -> CancelSubscriptionPayload:
            now = context.now()
            return CancelSubscriptionPayload(
                subscription=_subscription(outcome, now),
                effective_at=outcome.effective_at,
                prorations=_prorations(outcome),
                final_invoice=await _final_invoice(context.session, outcome),
                issued_invoices=[Invoice.from_model(invoice) for invoice in outcome.issued],
                event=_event(outcome, now),
                user_errors=[],
            )

        found, errors = await _lifecycle(info, input.customer_id, build, payload, dry_run=input.dry_run)
        return found or CancelSubscriptionPayload(
            subscription=None,
            effective_at=None,
            prorations=[],
            final_invoice=None,
            issued_invoices=[],
            event=None,
            user_errors=errors,
        )

    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Undo a cancel scheduled for the period's end, before it happens.",
    )
    async def resume_subscription(self, info: Info, input: ResumeSubscriptionInput) -> ResumeSubscriptionPayload:
        context = info.context

        def build(customer_id: uuid.UUID) -> LifecycleRequest:
            return LifecycleRequest(
                customer_id,
                RESUME,
                input.idempotency_key,
                context.viewer.actor,
                subscription_id=subscription_id_of(input.subscription_id),
            )

        async def payload(outcome: LifecycleOutcome) -> ResumeSubscriptionPayload:
            now = context.now()
            return ResumeSubscriptionPayload(
                subscription=_subscription(outcome, now), event=_event(outcome, now), user_errors=[]
            )

        found, errors = await _lifecycle(info, input.customer_id, build, payload, dry_run=False)
        return found or ResumeSubscriptionPayload(subscription=None, event=None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Pause a subscription: no base fee while paused (the unused part credited); usage metered or "
        "refused as its plan says (paused_usage); entitlements answer allowed: false (SUBSCRIPTION_PAUSED).",
    )
    async def pause_subscription(self, info: Info, input: PauseSubscriptionInput) -> PauseSubscriptionPayload:
        return await _pause_or_unpause(info, input, PAUSE)

    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Unpause a paused subscription: the rest of the period's base fee is charged.",
    )
    async def unpause_subscription(self, info: Info, input: UnpauseSubscriptionInput) -> PauseSubscriptionPayload:
        return await _pause_or_unpause(info, input, UNPAUSE)


async def _pause_or_unpause(info: Info, input: PauseSubscriptionInput, kind: str) -> PauseSubscriptionPayload:
    context = info.context

    def build(customer_id: uuid.UUID) -> LifecycleRequest:
        return LifecycleRequest(
            customer_id,
            kind,
            input.idempotency_key,
            context.viewer.actor,
            at=input.at,
            subscription_id=subscription_id_of(input.subscription_id),
        )

    async def payload(outcome: LifecycleOutcome) -> PauseSubscriptionPayload:
        now = context.now()
        return PauseSubscriptionPayload(
            subscription=_subscription(outcome, now),
            effective_at=outcome.effective_at,
            prorations=_prorations(outcome),
            event=_event(outcome, now),
            user_errors=[],
        )

    found, errors = await _lifecycle(info, input.customer_id, build, payload, dry_run=input.dry_run)
    return found or PauseSubscriptionPayload(
        subscription=None, effective_at=None, prorations=[], event=None, user_errors=errors
    )
