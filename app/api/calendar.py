"""GraphQL of the billing calendar: ending a trial now or at a moment (its invoice issued at once,
with a dry run that shows it) and extending a trial."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from app.api.billing import InvoiceLine
from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import WHICH_SUBSCRIPTION, customer_of, subscription_id_of
from app.auth import Capability
from app.billing_run import billing_window
from billing.invoice_numbers import invoice_number
from billing.invoices import service as billing
from billing.models import Invoice as InvoiceRow
from billing.subscriptions.trials import TrialOutcome, change_trial_billed
from customers.trials import TrialChangeRequest

if TYPE_CHECKING:
    from app.api.customers import Subscription


@strawberry.type(description="An invoice a trial change issued (or, in a dry run, would issue), with its lines.")
class TrialInvoice:
    number: str | None = strawberry.field(description="Null in a dry run: nothing was issued.")
    kind: str
    period_start: datetime
    period_end: datetime
    total: Money
    credits_applied: Money
    amount_due: Money
    lines: list[InvoiceLine]


@strawberry.input
class EndTrialInput:
    customer_id: strawberry.ID
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; inside the trial. The first paid period starts here."
    )
    dry_run: bool = strawberry.field(default=False, description="Show the invoices it would issue; change nothing.")


@strawberry.input
class ExtendTrialInput:
    customer_id: strawberry.ID
    until: datetime = strawberry.field(description="The trial's new end: after its current one.")
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)


@strawberry.type
class TrialPayload:
    subscription: Annotated[Subscription, strawberry.lazy("app.api.customers")] | None
    invoices: list[TrialInvoice] = strawberry.field(
        description="The invoices issued by the change: the trial's own, with the first paid period's base fee."
    )
    user_errors: list[UserError]


async def _invoice_of(session: object, row: InvoiceRow, *, dry_run: bool) -> TrialInvoice:
    lines = (await billing.lines_of(session, [row.id]))[row.id]  # type: ignore[arg-type]
    currency = row.currency
    return TrialInvoice(
        number=None if dry_run else invoice_number(row.number),
        kind=row.kind,
        period_start=row.period_start,
        period_end=row.period_end,
        total=money(row.total, currency),
        credits_applied=money(row.credits_applied, currency),
        amount_due=money(row.amount_due, currency),
        lines=[InvoiceLine.from_draft(line, currency, line.amount, line.position, siblings=lines) for line in lines],
    )


async def _trial_change(
    info: Info,
    customer_id: strawberry.ID,
    kind: str,
    key: str,
    at: datetime | None,
    *,
    dry_run: bool,
    subscription_id: strawberry.ID | None = None,
) -> TrialPayload:
    from app.api.customers import Subscription

    context = info.context

    async def change() -> TrialPayload:
        customer = await customer_of(info, customer_id)
        request = TrialChangeRequest(
            customer_id=customer.id,
            kind=kind,
            idempotency_key=key,
            actor=context.viewer.actor,
            at=at,
            subscription_id=subscription_id_of(subscription_id),
        )
        outcome: TrialOutcome = await change_trial_billed(
            context.session,
            request,
            as_of=context.now(),
            window=billing_window(context.settings),
            backdate_limit=timedelta(days=context.settings.backdate_max_days),
        )
        # Built before the transaction ends: a dry run rolls back, which expires the rows.
        return TrialPayload(
            subscription=Subscription.from_model(outcome.subscription, context.now()),
            invoices=[await _invoice_of(context.session, row, dry_run=dry_run) for row in outcome.invoices],
            user_errors=[],
        )

    payload, errors = await run_mutation(info, change, commit=not dry_run)
    return payload or TrialPayload(subscription=None, invoices=[], user_errors=errors)


@strawberry.type
class CalendarMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="End a customer's trial now (or at `at`): the first paid period starts then, and the "
        "trial's invoice, with that period's base fee in advance, is issued at once.",
    )
    async def end_trial(self, info: Info, input: EndTrialInput) -> TrialPayload:
        return await _trial_change(
            info,
            input.customer_id,
            "end",
            input.idempotency_key,
            input.at,
            dry_run=input.dry_run,
            subscription_id=input.subscription_id,
        )

    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Extend a customer's trial until a later moment (the first paid period moves with it).",
    )
    async def extend_trial(self, info: Info, input: ExtendTrialInput) -> TrialPayload:
        return await _trial_change(
            info,
            input.customer_id,
            "extend",
            input.idempotency_key,
            input.until,
            dry_run=False,
            subscription_id=input.subscription_id,
        )
