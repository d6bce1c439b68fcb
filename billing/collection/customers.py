"""Collection through Stripe: a Stripe customer for each Tally customer, created on demand, and
SetupIntents for the frontend to save a card. (Payments through the outbox come next, issue #6.)"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection.errors import CollectionOff
from billing.collection.stripe_gateway import SetupIntent, StripeGateway
from billing.models import StripeCustomer
from customers import service as customers
from customers.errors import CustomerNotFound
from ledger.errors import InvalidInput


async def stripe_customer_id(
    session: AsyncSession, gateway: StripeGateway, customer_id: uuid.UUID, *, as_of: datetime
) -> str:
    """The customer's Stripe customer, created on first need. Two concurrent first needs send the
    same idempotency key, so Stripe answers both with one customer, stored once."""
    query = select(StripeCustomer).where(col(StripeCustomer.customer_id) == customer_id)
    found = (await session.exec(query)).first()
    if found is not None:
        return found.stripe_customer_id
    customer = await customers.get_customer(session, customer_id=customer_id)
    if customer is None:
        raise CustomerNotFound()
    created = await gateway.create_customer(tally_customer_id=customer.id, name=customer.name, email=customer.email)
    await session.execute(
        insert(StripeCustomer)
        .values(customer_id=customer.id, stripe_customer_id=created, created_at=as_of)
        .on_conflict_do_nothing(index_elements=["customer_id"])
    )
    return (await session.exec(query.execution_options(populate_existing=True))).one().stripe_customer_id


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
