"""GraphQL of collection: SetupIntents for the frontend to save a card."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from app.api.common import UserError, run_mutation
from app.api.ledger import customer_of
from app.api.permissions import requires
from app.auth import Capability
from app.collection import stripe_gateway
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
