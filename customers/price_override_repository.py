"""SQL of price overrides: a customer's history, in effect or not, and look-ups by key."""

from __future__ import annotations

import uuid

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.models import PlanChange, PriceOverride


async def live_overrides(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID | None = None
) -> list[PriceOverride]:
    """Every override change of the customer (of one subscription, when named) that counts, in the
    order recorded: the drops of a plan change that was canceled (by a later immediate change)
    never took effect."""
    query = (
        select(PriceOverride)
        .outerjoin(PlanChange, col(PlanChange.id) == col(PriceOverride.plan_change_id))
        .where(col(PriceOverride.customer_id) == customer_id)
        .where(or_(col(PlanChange.id).is_(None), col(PlanChange.status) != "canceled"))
        .order_by(col(PriceOverride.seq))
    )
    if subscription_id is not None:
        query = query.where(col(PriceOverride.subscription_id) == subscription_id)
    return list(await session.exec(query))


async def override_by_key(session: AsyncSession, idempotency_key: str) -> PriceOverride | None:
    query = select(PriceOverride).where(col(PriceOverride.idempotency_key) == idempotency_key)
    return (await session.exec(query)).first()


async def history(session: AsyncSession, customer_id: uuid.UUID, *, limit: int) -> list[PriceOverride]:
    """The customer's override changes, newest first, including those a canceled plan change wrote."""
    query = (
        select(PriceOverride)
        .where(col(PriceOverride.customer_id) == customer_id)
        .order_by(col(PriceOverride.seq).desc())
        .limit(limit)
    )
    return list(await session.exec(query))


async def dropped_by(session: AsyncSession, plan_change_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[PriceOverride]]:
    grouped: dict[uuid.UUID, list[PriceOverride]] = {change_id: [] for change_id in plan_change_ids}
    query = (
        select(PriceOverride)
        .where(col(PriceOverride.plan_change_id).in_(plan_change_ids))
        .order_by(col(PriceOverride.seq))
    )
    for row in await session.exec(query):
        assert row.plan_change_id is not None
        grouped[row.plan_change_id].append(row)
    return grouped
