"""SQL of promotions: the insert that detects a taken code, the redemption claimed once per
customer, the counted update that cannot overshoot ``max_redemptions``, and the reads."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.models import Promotion, PromotionRedemption


async def insert_promotion(session: AsyncSession, promotion: Promotion) -> bool:
    """Insert unless the code (ignoring case) is taken; the unique index decides, not a prior read."""
    statement = (
        insert(Promotion)
        .values(promotion.model_dump())
        .on_conflict_do_nothing(index_elements=["code_key"])
        .returning(col(Promotion.id))
    )
    return (await session.execute(statement)).first() is not None


async def lock_promotion(session: AsyncSession, promotion_id: uuid.UUID) -> Promotion | None:
    """The promotion under its row lock, read afresh, so an edit and a redemption take turns."""
    query = (
        select(Promotion)
        .where(col(Promotion.id) == promotion_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).first()


async def promotion_by_code_key(session: AsyncSession, code_key: str) -> Promotion | None:
    return (await session.exec(select(Promotion).where(col(Promotion.code_key) == code_key))).first()


async def promotions_newest_first(session: AsyncSession) -> list[Promotion]:
    return list(await session.exec(select(Promotion).order_by(col(Promotion.created_at).desc())))


async def claim_redemption(
    session: AsyncSession, *, promotion_id: uuid.UUID, customer_id: uuid.UUID, idempotency_key: str, as_of: datetime
) -> bool:
    """Insert the customer's one redemption row; False if the customer already has one."""
    claimed = await session.execute(
        insert(PromotionRedemption)
        .values(promotion_id=promotion_id, customer_id=customer_id, idempotency_key=idempotency_key, redeemed_at=as_of)
        .on_conflict_do_nothing()
        .returning(col(PromotionRedemption.customer_id))
    )
    return claimed.first() is not None


async def redemption(
    session: AsyncSession, promotion_id: uuid.UUID, customer_id: uuid.UUID
) -> PromotionRedemption | None:
    return await session.get(PromotionRedemption, (promotion_id, customer_id))


# One conditional statement counts a redemption: it cannot overshoot ``max_redemptions`` however
# many redeem at once, and refuses an inactive or expired promotion in the same breath.
COUNT_REDEMPTION = text(
    "UPDATE promotions SET redemptions = redemptions + 1 WHERE id = :id AND active "
    "AND (max_redemptions IS NULL OR redemptions < max_redemptions) "
    "AND (expires_at IS NULL OR expires_at > :as_of) RETURNING redemptions"
)


async def count_redemption(session: AsyncSession, promotion_id: uuid.UUID, *, as_of: datetime) -> bool:
    """Count one more redemption; False if the promotion is inactive, expired or fully redeemed."""
    counted = await session.execute(COUNT_REDEMPTION, {"id": promotion_id, "as_of": as_of})
    return counted.first() is not None


async def set_redemption_grant(
    session: AsyncSession, *, promotion_id: uuid.UUID, customer_id: uuid.UUID, grant_id: uuid.UUID
) -> None:
    await session.execute(
        text("UPDATE promotion_redemptions SET grant_id = :grant WHERE promotion_id = :p AND customer_id = :c"),
        {"grant": grant_id, "p": promotion_id, "c": customer_id},
    )


async def granted_redemptions(session: AsyncSession, promotion_ids: list[uuid.UUID]) -> list[PromotionRedemption]:
    """The redemptions of these promotions that made their grant, newest first."""
    query = (
        select(PromotionRedemption)
        .where(col(PromotionRedemption.promotion_id).in_(promotion_ids), col(PromotionRedemption.grant_id).isnot(None))
        .order_by(col(PromotionRedemption.redeemed_at).desc())
    )
    return list(await session.exec(query))
