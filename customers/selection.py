"""Which of a customer's subscriptions a request is about, and which one charges a meter.

A customer may have several subscriptions (a base plan and add-ons). A request that changes one
(a cancel, a pause, a trial's end, a plan change, a price override, a charge left for the next
invoice, a minimum spend) names it by ``subscription_id``; without one it means the customer's
only subscription, and is refused, naming the field, when they have several.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository
from customers.errors import (
    CustomerNotFound,
    MeterAlreadyCharged,
    SubscriptionNotFound,
    SubscriptionRequired,
)
from customers.models import Customer, Subscription
from pricing.service import charges_of_version, plan_name_of_version


async def lock_subscription(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID | None = None
) -> Subscription | None:
    """The subscription a request means, locked until the caller's transaction ends (the billing
    run, plan changes and lifecycle requests of one subscription take turns); None when the
    customer has none. A named subscription of another customer is not found."""
    rows = await repository.lock_subscriptions(session, customer_id, subscription_id)
    if subscription_id is not None and not rows:
        if not await repository.get_by_ids(session, [customer_id]):
            raise CustomerNotFound()
        raise SubscriptionNotFound("the customer has no such subscription", field="subscriptionId")
    if len(rows) > 1:
        raise SubscriptionRequired(
            f"the customer has {len(rows)} subscriptions: pass subscriptionId to say which",
            field="subscriptionId",
        )
    return rows[0] if rows else None


async def check_meters_free(
    session: AsyncSession,
    customer_id: uuid.UUID,
    version_id: uuid.UUID,
    *,
    from_moment: datetime,
    besides: uuid.UUID | None = None,
) -> None:
    """Refuse a plan version that charges a meter another subscription of the customer charges
    while both run (the other not ended by ``from_moment``): each meter's usage belongs to the one
    subscription whose plan charges it, so no event is billed twice. ``besides`` is the
    subscription being changed. The caller holds the customer's lock (:func:`lock_customer`), so
    two requests cannot both pass."""
    charged = {meter.id: meter for _, meter in await charges_of_version(session, version_id)}
    if not charged:
        return
    for other in (await repository.all_subscriptions_of(session, [customer_id]))[customer_id]:
        if other.id == besides or (other.cancel_at is not None and other.cancel_at <= from_moment):
            continue
        for other_version in {other.plan_version_id, other.pending_plan_version_id} - {None}:
            assert other_version is not None
            for _, meter in await charges_of_version(session, other_version):
                if meter.id in charged:
                    plan = await plan_name_of_version(session, other_version)
                    raise MeterAlreadyCharged(
                        f"meter {meter.key!r} is already charged by the customer's subscription {other.id} "
                        f"({plan}): a meter's usage belongs to one subscription at a time",
                        field="planKey",
                    )


async def lock_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    """The customer, locked until the caller's transaction ends: requests that add a
    subscription or change what one charges take turns, so the meter check holds."""
    customer = await repository.lock_customer(session, customer_id)
    if customer is None:
        raise CustomerNotFound()
    return customer
