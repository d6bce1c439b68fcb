"""GraphQL of collection: SetupIntents for the frontend to save a card, and finance's actions on
an unpaid invoice (retry now, write off as uncollectible, void)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing import Invoice
from app.api.common import UserError, run_mutation
from app.api.ledger import customer_of
from app.api.permissions import requires
from app.auth import Capability
from app.collection import stripe_gateway
from billing import finance
from billing.collection import create_setup_intent
from billing.stripe_gateway import SetupIntent
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
            customer = await customer_of(info, str(input.customer_id))
            if not context.viewer.may_see_customer(customer.id):
                raise NotFound("no such customer", field="customerId")
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


def _invoice_id(value: strawberry.ID) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("no such invoice", field="invoiceId") from None


@strawberry.type
class FinanceMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_COLLECTION)],
        description="Collect an unpaid invoice now rather than at its next scheduled retry.",
    )
    async def retry_payment(self, info: Info, input: RetryPaymentInput) -> InvoicePayload:
        context = info.context
        row, errors = await run_mutation(
            info, lambda: finance.retry_payment(context.session, _invoice_id(input.invoice_id), as_of=context.now())
        )
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
    row, errors = await run_mutation(
        info,
        lambda: close(
            context.session,
            _invoice_id(input.invoice_id),
            reason=input.reason,
            actor=context.viewer.actor,
            idempotency_key=input.idempotency_key,
            as_of=context.now(),
        ),
    )
    return InvoicePayload(invoice=Invoice.from_model(row) if row else None, user_errors=errors)
