"""SQL of coupons, customer discounts and the discount periods invoices use."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Coupon, CustomerDiscount, DiscountPeriod


async def insert_coupon(session: AsyncSession, coupon: Coupon) -> bool:
    """Write the coupon unless its code (ignoring case) is taken; whether it was written."""
    statement = (
        insert(Coupon)
        .values(coupon.model_dump())
        .on_conflict_do_nothing(index_elements=["code_key"])
        .returning(col(Coupon.id))
    )
    return (await session.execute(statement)).first() is not None


async def coupon_by_code(session: AsyncSession, code_key: str) -> Coupon | None:
    return (await session.exec(select(Coupon).where(col(Coupon.code_key) == code_key))).first()


async def coupon_by_id(session: AsyncSession, coupon_id: uuid.UUID, *, lock: bool = False) -> Coupon | None:
    query = select(Coupon).where(col(Coupon.id) == coupon_id).execution_options(populate_existing=True)
    return (await session.exec(query.with_for_update() if lock else query)).first()


async def coupons(session: AsyncSession, *, include_archived: bool) -> list[Coupon]:
    query = select(Coupon).order_by(col(Coupon.created_at).desc(), col(Coupon.code_key))
    if not include_archived:
        query = query.where(col(Coupon.active))
    return list(await session.exec(query))


async def coupons_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Coupon]:
    return {row.id: row for row in await session.exec(select(Coupon).where(col(Coupon.id).in_(ids)))}


async def count_redemption(session: AsyncSession, coupon_id: uuid.UUID, as_of: datetime) -> bool:
    """Add one redemption if the coupon is active, not past ``redeem_by`` and not exhausted: one
    conditional UPDATE, which PostgreSQL re-checks on the row's newest version after waiting for
    its lock, so concurrent redeemers of the last redemption cannot both pass."""
    counted = await session.execute(
        text(
            "UPDATE coupons SET redemptions = redemptions + 1 WHERE id = :id AND active "
            "AND (max_redemptions IS NULL OR redemptions < max_redemptions) "
            "AND (redeem_by IS NULL OR redeem_by > :as_of) RETURNING redemptions"
        ),
        {"id": coupon_id, "as_of": as_of},
    )
    return counted.first() is not None


async def insert_discount(session: AsyncSession, discount: CustomerDiscount) -> bool:
    """Write the discount unless the customer already has this coupon or used this key."""
    statement = insert(CustomerDiscount).values(discount.model_dump()).on_conflict_do_nothing()
    return (await session.execute(statement.returning(col(CustomerDiscount.id)))).first() is not None


async def discount_by_key(
    session: AsyncSession, customer_id: uuid.UUID, idempotency_key: str
) -> CustomerDiscount | None:
    query = select(CustomerDiscount).where(
        col(CustomerDiscount.customer_id) == customer_id, col(CustomerDiscount.idempotency_key) == idempotency_key
    )
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def discount_by_id(
    session: AsyncSession, discount_id: uuid.UUID, *, lock: bool = False
) -> CustomerDiscount | None:
    query = select(CustomerDiscount).where(col(CustomerDiscount.id) == discount_id)
    query = query.execution_options(populate_existing=True)
    return (await session.exec(query.with_for_update() if lock else query)).first()


async def active_discounts(
    session: AsyncSession, customer_ids: Sequence[uuid.UUID], *, lock: bool = False
) -> list[CustomerDiscount]:
    """The customers' discounts not removed, oldest first (the order they stack in). With
    ``lock``, their rows are locked: an invoice being issued holds them until it commits, so two
    invoices of the customer never use the same period."""
    query = (
        select(CustomerDiscount)
        .where(col(CustomerDiscount.customer_id).in_(customer_ids), col(CustomerDiscount.status) == "active")
        .order_by(col(CustomerDiscount.applied_at), col(CustomerDiscount.id))
        .execution_options(populate_existing=True)
    )
    return list(await session.exec(query.with_for_update() if lock else query))


async def periods_used(session: AsyncSession, discount_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not discount_ids:
        return {}
    query = (
        select(col(DiscountPeriod.discount_id), func.count())
        .where(col(DiscountPeriod.discount_id).in_(discount_ids))
        .group_by(col(DiscountPeriod.discount_id))
    )
    return {discount_id: int(count) for discount_id, count in (await session.execute(query)).all()}


async def remove_discount(session: AsyncSession, discount_id: uuid.UUID, actor: str, as_of: datetime) -> None:
    await session.execute(
        text(
            "UPDATE customer_discounts SET status = 'removed', removed_at = :at, removed_by = :actor "
            "WHERE id = :id AND status = 'active'"
        ),
        {"id": discount_id, "at": as_of, "actor": actor},
    )


async def archive_coupon(session: AsyncSession, coupon_id: uuid.UUID, as_of: datetime) -> None:
    await session.execute(
        text("UPDATE coupons SET active = false, archived_at = :at WHERE id = :id AND active"),
        {"id": coupon_id, "at": as_of},
    )


async def record_periods(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write the discount periods an invoice used, in its transaction. The primary key (discount,
    period number) refuses a second invoice using the same period."""
    if rows:
        await session.execute(insert(DiscountPeriod).values(rows))
