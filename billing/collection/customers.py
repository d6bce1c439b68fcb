"""Collection through Stripe: a Stripe customer for each Tally customer, created on demand, and
SetupIntents for the frontend to save a card. (Payments through the outbox come next, issue #6.)"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection import repository as collection_repository
from billing.collection.errors import CollectionOff
from billing.collection.stripe_gateway import SetupIntent, StripeGateway
from customers import service as customers
from customers.errors import CustomerNotFound
from ledger.errors import InvalidInput


async def stripe_customer_id(
    session: AsyncSession, gateway: StripeGateway, customer_id: uuid.UUID, *, as_of: datetime
) -> str:
    """The customer's Stripe customer, created on first need. Two concurrent first needs send the
    same idempotency key, so Stripe answers both with one customer, stored once."""
    found = await collection_repository.stripe_customer_id_of(session, customer_id)
    if found is not None:
        return found
    customer = await customers.get_customer(session, customer_id=customer_id)
    if customer is None:
        raise CustomerNotFound()
    created = await gateway.create_customer(tally_customer_id=customer.id, name=customer.name, email=customer.email)
    return await collection_repository.store_stripe_customer(session, customer.id, created, created_at=as_of)


async def create_setup_intent(
    session: AsyncSession,
    gateway: StripeGateway | None,
    customer_id: uuid.UUID,
    *,
    idempotency_key: str,
    as_of: datetime,
) -> SetupIntent:
    if gateway is None:
        raise CollectionOff()
    if not idempotency_key.strip():
        raise InvalidInput("is required", field="idempotencyKey")
    stripe_id = await stripe_customer_id(session, gateway, customer_id, as_of=as_of)
    return await gateway.create_setup_intent(
        stripe_customer_id=stripe_id, idempotency_key=f"setup_intent:{customer_id}:{idempotency_key}"
    )
