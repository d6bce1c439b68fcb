"""GraphQL of collection: SetupIntents for the frontend to save a card, a customer's collection
(invoices being collected and their attempts, payments, refunds, disputes), finance's actions on
an unpaid invoice (retry now, write off as uncollectible, void), and reconciliation with Stripe."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.billing import Invoice, invoice_number
from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, customer_of, find_visible_customer, staff_only
from app.auth import Capability
from app.collection import stripe_gateway
from billing.collection import repository as collection_repository
from billing.collection import stripe_event_repository
from billing.collection import unpaid_invoices as finance
from billing.collection.customers import create_setup_intent
from billing.collection.errors import CollectionOff
from billing.collection.stripe_gateway import SetupIntent, client_secret_of
from billing.collection.webhooks import retry_by_hand
from billing.invoices import collection_state
from billing.invoices import service as billing
from billing.models import ReconciliationDiscrepancy, StripeDispute, StripeEvent, StripePayment
from billing.reconciliation import repository as reconciliation_repository
from billing.reconciliation import service as reconciliation
from ledger.errors import NotFound


@strawberry.input
class CreateSetupIntentInput:
    customer_id: strawberry.ID
    idempotency_key: str = strawberry.field(description="The same key returns the same SetupIntent.")


@strawberry.type
class CreateSetupIntentPayload:
    setup_intent_id: str | None
    client_secret: str | None = strawberry.field(description="For Stripe.js to confirm the card on the page.")
    user_errors: list[UserError]


@strawberry.type
class CollectionMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_PAYMENT_METHODS)],
        description="A Stripe SetupIntent to save the customer's card for invoice payments.",
    )
    async def create_setup_intent(self, info: Info, input: CreateSetupIntentInput) -> CreateSetupIntentPayload:
        context = info.context

        async def create() -> SetupIntent:
            customer = await customer_of(info, input.customer_id)
            return await create_setup_intent(
                context.session,
                stripe_gateway(context.settings),
                customer.id,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
            )

        intent, errors = await run_mutation(info, create)
        return CreateSetupIntentPayload(
            setup_intent_id=intent.id if intent else None,
            client_secret=intent.client_secret if intent else None,
            user_errors=errors,
        )


@strawberry.input
class RetryPaymentInput:
    invoice_id: strawberry.ID


@strawberry.input
class CloseInvoiceInput:
    invoice_id: strawberry.ID
    reason: str
    idempotency_key: str


@strawberry.type
class InvoicePayload:
    invoice: Invoice | None
    user_errors: list[UserError]


NO_SUCH_INVOICE = "no such invoice"


def _uuid(value: strawberry.ID, field: str, missing: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(missing, field=field) from None


async def _invoice_id(info: Info, value: strawberry.ID) -> uuid.UUID:
    """The invoice a mutation names, when the viewer may see its customer; else NOT_FOUND."""
    invoice_id = _uuid(value, "invoiceId", NO_SUCH_INVOICE)
    found = (await billing.invoices_by_id(info.context.session, [invoice_id])).get(invoice_id)
    if found is None or not info.context.viewer.may_see(found.customer_id):
        raise NotFound(NO_SUCH_INVOICE, field="invoiceId")
    return invoice_id


@strawberry.type
class FinanceMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Collect an unpaid invoice now rather than at its next scheduled retry.",
    )
    async def retry_payment(self, info: Info, input: RetryPaymentInput) -> InvoicePayload:
        context = info.context

        async def retry() -> Any:
            return await finance.retry_payment(
                context.session, await _invoice_id(info, input.invoice_id), as_of=context.now()
            )

        row, errors = await run_mutation(info, retry)
        return InvoicePayload(invoice=Invoice.from_model(row) if row else None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Write an unpaid invoice off to bad debt; it stays, marked uncollectible.",
    )
    async def mark_invoice_uncollectible(self, info: Info, input: CloseInvoiceInput) -> InvoicePayload:
        return await _close_invoice(info, input, finance.mark_uncollectible)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Void an unpaid invoice: what it posted is reversed in the ledger.",
    )
    async def void_invoice(self, info: Info, input: CloseInvoiceInput) -> InvoicePayload:
        return await _close_invoice(info, input, finance.void_invoice)


async def _close_invoice(info: Info, input: CloseInvoiceInput, close: Callable[..., Awaitable[Any]]) -> InvoicePayload:
    """Write off or void: the same input, the same payload, a different ledger movement."""
    context = info.context

    async def run() -> Any:
        return await close(
            context.session,
            await _invoice_id(info, input.invoice_id),
            reason=input.reason,
            actor=context.viewer.actor,
            idempotency_key=input.idempotency_key,
            as_of=context.now(),
        )

    row, errors = await run_mutation(info, run)
    return InvoicePayload(invoice=Invoice.from_model(row) if row else None, user_errors=errors)


@strawberry.type
class PaymentAttempt:
    number: int
    payment_intent_id: str | None
    status: str = strawberry.field(
        description="succeeded, failed, requires_action (the customer must act) or processing."
    )
    error: str | None
    attempted_at: datetime

    @strawberry.field(
        description="While the attempt requires action: the PaymentIntent's client secret, for Stripe.js to "
        "let the customer authenticate (handleNextAction). Read from Stripe when asked; null otherwise."
    )
    async def client_secret(self, info: Info) -> str | None:
        gateway = stripe_gateway(info.context.settings)
        if self.status != "requires_action" or not self.payment_intent_id or gateway is None:
            return None
        return await client_secret_of(gateway, self.payment_intent_id)


@strawberry.type
class InvoiceCollection:
    invoice_id: strawberry.ID
    invoice_number: str
    invoice_status: str
    amount_due: Money
    status: str = strawberry.field(
        description="pending, in_flight, action_required (waiting for the customer to authenticate), "
        "processing, collected or failed (retries exhausted, written off or voided)."
    )
    attempts: list[PaymentAttempt]
    next_attempt_at: datetime | None = strawberry.field(description="When the next try is due, if one is.")
    first_failed_at: datetime | None = strawberry.field(description="Dunning retries are counted from here.")
    last_error: str | None

    @strawberry.field(description="The invoice itself (its due date, totals and lines), read once per request.")
    async def invoice(self, info: Info) -> Invoice:
        return Invoice.from_model(await info.context.loaders.invoice.load(uuid.UUID(self.invoice_id)))


@strawberry.type
class Payment:
    payment_intent_id: str
    charge_id: str | None
    invoice_number: str
    amount: Money
    refunded: Money
    disputed: Money
    paid_at: datetime


@strawberry.type
class Dispute:
    dispute_id: str
    payment_intent_id: str
    amount: Money
    reason: str | None
    status: str
    opened_at: datetime


@strawberry.type
class CustomerCollection:
    collection_on: bool = strawberry.field(description="False when no STRIPE_API_KEY is set: nothing is collected.")
    stripe_customer_id: str | None
    default_payment_method: str | None = strawberry.field(description="As Stripe's events last reported it.")
    invoices: list[InvoiceCollection]
    payments: list[Payment]
    disputes: list[Dispute]


@strawberry.type
class Discrepancy:
    id: strawberry.ID
    kind: str = strawberry.field(
        description="MISSING_IN_TALLY, MISSING_IN_STRIPE, AMOUNT_MISMATCH, CURRENCY_MISMATCH, STATUS_MISMATCH "
        "or DUPLICATE."
    )
    object_id: str = strawberry.field(description="The Stripe object (or invoice) it is about.")
    summary: str
    invoice_id: strawberry.ID | None
    customer_external_id: str | None
    tally_side: JSON | None = strawberry.field(description="The ledger's side as it was seen.")
    stripe_side: JSON | None = strawberry.field(description="Stripe's side as it was seen.")
    detected_at: datetime
    last_seen_at: datetime
    status: str = strawberry.field(description="open or resolved.")
    note: str | None
    resolved_by: str | None = staff_only("Who resolved it. " + STAFF_ONLY)
    resolved_at: datetime | None

    @classmethod
    def from_model(cls, row: ReconciliationDiscrepancy, external_id: str | None) -> Discrepancy:
        return cls(
            id=strawberry.ID(str(row.id)),
            kind=row.kind,
            object_id=row.object_id,
            summary=row.summary,
            invoice_id=strawberry.ID(str(row.invoice_id)) if row.invoice_id else None,
            customer_external_id=external_id,
            tally_side=cast(JSON, row.tally_side),
            stripe_side=cast(JSON, row.stripe_side),
            detected_at=row.detected_at,
            last_seen_at=row.last_seen_at,
            status=row.status,
            note=row.note,
            resolved_by=row.resolved_by,
            resolved_at=row.resolved_at,
        )


@strawberry.type
class StripeEventRow:
    id: str
    type: str
    object_id: str | None
    status: str = strawberry.field(description="received (waiting), processed, ignored or failed.")
    error: str | None = strawberry.field(description="Why it failed or was ignored.")
    deliveries: int = strawberry.field(description="How many times Stripe delivered it (stored once).")
    received_at: datetime
    processed_at: datetime | None = strawberry.field(description="When it was last acted on.")
    trace_id: str | None = strawberry.field(description="The trace of its first delivery.")
    attempts: int = strawberry.field(description="How many times processing it was tried.")
    next_attempt_at: datetime | None = strawberry.field(
        description="When a failed event is tried again by itself; null: only when retried by hand."
    )

    @classmethod
    def from_model(cls, row: StripeEvent) -> StripeEventRow:
        return cls(
            id=row.id,
            type=row.type,
            object_id=row.object_id,
            status=row.status,
            error=row.error,
            deliveries=row.deliveries,
            received_at=row.received_at,
            processed_at=row.processed_at,
            trace_id=row.trace_id,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
        )


@strawberry.type
class ReconciliationRun:
    as_of: datetime
    checked: int = strawberry.field(description="Payments compared, on both sides.")
    discrepancies: int


def _customer_collection(
    settings_on: bool,
    stripe_customer: tuple[str, str | None] | None,
    collections: list[dict[str, Any]],
    payments: list[tuple[StripePayment, int]],
    disputes: list[StripeDispute],
) -> CustomerCollection:
    return CustomerCollection(
        collection_on=settings_on,
        stripe_customer_id=stripe_customer[0] if stripe_customer else None,
        default_payment_method=stripe_customer[1] if stripe_customer else None,
        invoices=[
            InvoiceCollection(
                invoice_id=strawberry.ID(str(row["invoice_id"])),
                invoice_number=invoice_number(row["number"]),
                invoice_status=row["invoice_status"],
                amount_due=money(row["amount_due"], row["currency"]),
                status=row["status"],
                attempts=[
                    PaymentAttempt(
                        number=attempt["number"],
                        payment_intent_id=attempt["payment_intent_id"],
                        status=attempt["status"],
                        error=attempt["error"],
                        attempted_at=datetime.fromisoformat(attempt["attempted_at"]),
                    )
                    for attempt in row["tries"]
                ],
                next_attempt_at=row["next_attempt_at"] if row["status"] in ("pending", "in_flight") else None,
                first_failed_at=row["first_failed_at"],
                last_error=row["last_error"],
            )
            for row in collections
        ],
        payments=[
            Payment(
                payment_intent_id=payment.payment_intent_id,
                charge_id=payment.charge_id,
                invoice_number=invoice_number(number),
                amount=money(payment.amount, payment.currency),
                refunded=money(payment.refunded, payment.currency),
                disputed=money(payment.disputed, payment.currency),
                paid_at=payment.paid_at,
            )
            for payment, number in payments
        ],
        disputes=[
            Dispute(
                dispute_id=dispute.dispute_id,
                payment_intent_id=dispute.payment_intent_id,
                amount=money(dispute.amount, dispute.currency),
                reason=dispute.reason,
                status=dispute.status,
                opened_at=dispute.opened_at,
            )
            for dispute in disputes
        ],
    )


@strawberry.type
class CollectionQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="How a customer's invoices are being collected: attempts, dunning, payments, refunds, disputes.",
    )
    async def customer_collection(self, info: Info, customer_id: strawberry.ID) -> CustomerCollection | None:
        context = info.context
        customer = await find_visible_customer(context.session, context.viewer, customer_id=customer_id)
        if customer is None:
            return None
        session = context.session
        return _customer_collection(
            stripe_gateway(context.settings) is not None,
            await collection_state.stripe_customer_of(session, customer.id),
            await collection_repository.collections_of(session, customer.id),
            await collection_repository.payments_of(session, customer.id),
            await collection_repository.disputes_of(session, customer.id),
        )

    @strawberry.field(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Differences between the ledger and Stripe, newest first (status open, resolved, or null: all).",
    )
    async def reconciliation_discrepancies(
        self, info: Info, status: str | None = "open", first: int = 100
    ) -> list[Discrepancy]:
        rows = await reconciliation_repository.discrepancies(info.context.session, status=status, limit=min(first, 500))
        return [Discrepancy.from_model(row, external_id) for row, external_id in rows]

    @strawberry.field(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)], description="One discrepancy; null when none."
    )
    async def reconciliation_discrepancy(self, info: Info, id: strawberry.ID) -> Discrepancy | None:
        try:
            discrepancy_id = uuid.UUID(str(id))
        except ValueError:
            return None
        rows = await reconciliation_repository.discrepancies(
            info.context.session, status=None, limit=1, discrepancy_id=discrepancy_id
        )
        return Discrepancy.from_model(*rows[0]) if rows else None

    @strawberry.field(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Stripe's webhook events as stored, newest first (status: received, processed, ignored, failed).",
    )
    async def stripe_events(self, info: Info, status: str | None = None, first: int = 50) -> list[StripeEventRow]:
        rows = await stripe_event_repository.stripe_events(info.context.session, status=status, limit=min(first, 500))
        return [StripeEventRow.from_model(row) for row in rows]

    @strawberry.field(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="False when no STRIPE_API_KEY is set: nothing is collected through Stripe, so nothing is "
        "reconciled with it.",
    )
    def collection_on(self, info: Info) -> bool:
        return stripe_gateway(info.context.settings) is not None

    @strawberry.field(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)], description="The latest reconciliation runs."
    )
    async def reconciliation_runs(self, info: Info, first: int = 10) -> list[ReconciliationRun]:
        runs = await reconciliation_repository.reconciliation_runs(info.context.session, limit=min(first, 100))
        return [
            ReconciliationRun(as_of=run.as_of, checked=run.checked, discrepancies=run.discrepancies) for run in runs
        ]


@strawberry.input
class ResolveDiscrepancyInput:
    discrepancy_id: strawberry.ID
    note: str = strawberry.field(description="What was found or done about it; required.")


@strawberry.type
class ResolveDiscrepancyPayload:
    discrepancy: Discrepancy | None
    user_errors: list[UserError]


@strawberry.input
class RetryStripeEventInput:
    event_id: str = strawberry.field(description="The id of a failed Stripe event (evt_…).")


@strawberry.type
class RetryStripeEventPayload:
    event: StripeEventRow | None
    user_errors: list[UserError]


@strawberry.type
class RunReconciliationPayload:
    run: ReconciliationRun | None
    user_errors: list[UserError]


@strawberry.type
class ReconciliationMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Close a discrepancy with a note saying what was found or done.",
    )
    async def resolve_discrepancy(self, info: Info, input: ResolveDiscrepancyInput) -> ResolveDiscrepancyPayload:
        context = info.context

        async def close() -> Discrepancy:
            discrepancy_id = _uuid(input.discrepancy_id, "discrepancyId", "no such discrepancy")
            await reconciliation.resolve(
                context.session, discrepancy_id, note=input.note, actor=context.viewer.actor, as_of=context.now()
            )
            [(row, external_id)] = await reconciliation_repository.discrepancies(
                context.session, status=None, limit=1, discrepancy_id=discrepancy_id
            )
            return Discrepancy.from_model(row, external_id)

        discrepancy, errors = await run_mutation(info, close)
        return ResolveDiscrepancyPayload(discrepancy=discrepancy, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Queue a failed Stripe event again now, once what made it fail is fixed.",
    )
    async def retry_stripe_event(self, info: Info, input: RetryStripeEventInput) -> RetryStripeEventPayload:
        context = info.context

        async def retry() -> StripeEventRow:
            await retry_by_hand(context.session, input.event_id)
            [row] = await stripe_event_repository.stripe_events_by_id(context.session, [input.event_id])
            return StripeEventRow.from_model(row)

        event, errors = await run_mutation(info, retry)
        return RetryStripeEventPayload(event=event, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Reconcile the last 35 days with Stripe now (the daily job does the same).",
    )
    async def run_reconciliation(self, info: Info) -> RunReconciliationPayload:
        context = info.context

        async def run() -> ReconciliationRun:
            gateway = stripe_gateway(context.settings)
            if gateway is None:
                raise CollectionOff()
            report = await reconciliation.reconcile(context.session, gateway, as_of=context.now())
            return ReconciliationRun(
                as_of=report.as_of, checked=report.checked, discrepancies=len(report.discrepancies)
            )

        found, errors = await run_mutation(info, run)
        return RunReconciliationPayload(run=found, user_errors=errors)
