"""SQL of credit purchases, credit balance settings and spend authorizations (money held in
``usage_authorizations``).

A purchase is written with ``INSERT … ON CONFLICT DO NOTHING`` (no target: either its
idempotency key or the one-auto-recharge-in-flight index may refuse it): a concurrent request
with the same key waits for the first one's transaction, then finds its row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import CreditBalanceSettings, CreditPurchase


async def insert_purchase(session: AsyncSession, purchase: CreditPurchase) -> tuple[CreditPurchase | None, bool]:
    """The purchase as stored under its key and whether this call made it; (None, False) when the
    in-flight index refused a second auto-recharge."""
    statement = insert(CreditPurchase).values(purchase.model_dump()).on_conflict_do_nothing()
    created = (await session.execute(statement.returning(col(CreditPurchase.id)))).first() is not None
    return await purchase_by_key(session, purchase.idempotency_key), created


async def purchase_by_key(session: AsyncSession, idempotency_key: str) -> CreditPurchase | None:
    query = select(CreditPurchase).where(col(CreditPurchase.idempotency_key) == idempotency_key)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def link_invoice(session: AsyncSession, purchase_id: uuid.UUID, invoice_id: uuid.UUID) -> None:
    await session.execute(
        update(CreditPurchase)
        .where(col(CreditPurchase.id) == purchase_id)
        .values(invoice_id=invoice_id)
        .execution_options(synchronize_session=False)
    )


async def purchase_of_invoice(
    session: AsyncSession, invoice_id: uuid.UUID, *, lock: bool = False
) -> CreditPurchase | None:
    query = select(CreditPurchase).where(col(CreditPurchase.invoice_id) == invoice_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def settle(
    session: AsyncSession,
    purchase_id: uuid.UUID,
    *,
    status: str,
    grant_id: uuid.UUID | None,
    failure: str | None,
    at: datetime,
) -> None:
    """Paid or failed, once: only a purchase awaiting payment moves."""
    await session.execute(
        update(CreditPurchase)
        .where(col(CreditPurchase.id) == purchase_id, col(CreditPurchase.status) == "awaiting_payment")
        .values(status=status, grant_id=grant_id, failure=failure, settled_at=at)
        .execution_options(synchronize_session=False)
    )


async def purchases_page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    origin: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[CreditPurchase]:
    """Newest first, keyset by (created_at, id)."""
    query = select(CreditPurchase).where(col(CreditPurchase.customer_id) == customer_id)
    if origin is not None:
        query = query.where(col(CreditPurchase.origin) == origin)
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(
                col(CreditPurchase.created_at) < at,
                and_(col(CreditPurchase.created_at) == at, col(CreditPurchase.id) < uuid.UUID(last_id)),
            )
        )
    query = query.order_by(col(CreditPurchase.created_at).desc(), col(CreditPurchase.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


async def recharged_since(session: AsyncSession, customer_id: uuid.UUID, since: datetime) -> int:
    """What the customer's auto-recharges since ``since`` came to, those that failed left out."""
    query = select(func.coalesce(func.sum(CreditPurchase.amount), 0)).where(
        col(CreditPurchase.customer_id) == customer_id,
        col(CreditPurchase.origin) == "auto_recharge",
        col(CreditPurchase.status) != "failed",
        col(CreditPurchase.created_at) >= since,
    )
    return int((await session.exec(query)).one())


async def recharge_count(session: AsyncSession, customer_id: uuid.UUID) -> int:
    query = select(func.count()).where(
        col(CreditPurchase.customer_id) == customer_id, col(CreditPurchase.origin) == "auto_recharge"
    )
    return int((await session.exec(query)).one())


async def settings_of(
    session: AsyncSession, customer_id: uuid.UUID, *, lock: bool = False
) -> CreditBalanceSettings | None:
    query = select(CreditBalanceSettings).where(col(CreditBalanceSettings.customer_id) == customer_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def save_settings(session: AsyncSession, settings: CreditBalanceSettings) -> CreditBalanceSettings:
    """Insert or replace the customer's settings; the alert's state and the spend cap (set on its
    own, :func:`save_spend_cap`) are kept as they are."""
    values = settings.model_dump()
    kept = ("customer_id", "balance_low", "balance_low_crossings", "spend_cap")
    statement = insert(CreditBalanceSettings).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["customer_id"],
        set_={name: statement.excluded[name] for name in values if name not in kept},
    )
    await session.execute(statement)
    found = await settings_of(session, settings.customer_id)
    assert found is not None
    return found


async def save_spend_cap(
    session: AsyncSession,
    customer_id: uuid.UUID,
    currency: str,
    spend_cap: int | None,
    *,
    default_recharge_priority: int,
    actor: str,
    as_of: datetime,
) -> None:
    """Set the customer's spend cap (None: no cap), keeping their other settings (when they have
    none: no threshold, auto-recharge off, at ``default_recharge_priority``)."""
    values = {
        "customer_id": customer_id,
        "currency": currency,
        "recharge_enabled": False,
        "recharge_priority": default_recharge_priority,
        "balance_low": False,
        "balance_low_crossings": 0,
        "spend_cap": spend_cap,
        "updated_by": actor,
        "updated_at": as_of,
    }
    statement = insert(CreditBalanceSettings).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["customer_id"],
        set_={name: statement.excluded[name] for name in ("spend_cap", "updated_by", "updated_at")},
    )
    await session.execute(statement)


async def watched_customers(session: AsyncSession, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """Customers with a low-balance threshold or an auto-recharge, in id order from ``after``."""
    query = select(col(CreditBalanceSettings.customer_id)).where(
        or_(
            col(CreditBalanceSettings.recharge_enabled),
            col(CreditBalanceSettings.low_balance_threshold).is_not(None),
        )
    )
    if after is not None:
        query = query.where(col(CreditBalanceSettings.customer_id) > after)
    query = query.order_by(col(CreditBalanceSettings.customer_id)).limit(limit)
    return list((await session.exec(query)).all())


async def set_alert_state(session: AsyncSession, customer_id: uuid.UUID, *, low: bool, crossings: int) -> None:
    await session.execute(
        update(CreditBalanceSettings)
        .where(col(CreditBalanceSettings.customer_id) == customer_id)
        .values(balance_low=low, balance_low_crossings=crossings)
        .execution_options(synchronize_session=False)
    )


async def recharge_in_flight(session: AsyncSession, customer_id: uuid.UUID) -> bool:
    query = select(func.count()).where(
        col(CreditPurchase.customer_id) == customer_id,
        col(CreditPurchase.origin) == "auto_recharge",
        col(CreditPurchase.status) == "awaiting_payment",
    )
    return int((await session.exec(query)).one()) > 0


async def last_recharge_failure(session: AsyncSession, customer_id: uuid.UUID) -> datetime | None:
    query = select(func.max(CreditPurchase.settled_at)).where(
        col(CreditPurchase.customer_id) == customer_id,
        col(CreditPurchase.origin) == "auto_recharge",
        col(CreditPurchase.status) == "failed",
    )
    return (await session.exec(query)).one()


# The customer's turn, then what their live money holds hold and the key's earlier request (if
# any): two statements in one transaction, the second after the lock is held.
_TAKE_TURN = text("SELECT pg_advisory_xact_lock(hashtextextended('tally.spend:' || CAST(:customer_id AS text), 0))")
_HELD_AND_KEYED = text("""
SELECT (SELECT coalesce(sum(amount), 0) FROM usage_authorizations
        WHERE customer_id = :customer_id AND meter_id IS NULL AND allowed AND settled_at IS NULL
          AND expires_at > :as_of) AS held,
       k.*
FROM (SELECT 1) AS one
LEFT JOIN usage_authorizations k ON k.customer_id = :customer_id AND k.idempotency_key = :idempotency_key
""")
_RECORD = text("""
INSERT INTO usage_authorizations (id, customer_id, idempotency_key, amount, currency, ttl_seconds, allowed, reason,
                                  used, usage_limit, remaining, reserved, credits_available, created_at, expires_at)
VALUES (:id, :customer_id, :idempotency_key, :amount, :currency, :ttl_seconds, :allowed, :reason, :used,
        :usage_limit, :remaining, :reserved, :credits_available, :created_at, :expires_at)
ON CONFLICT (customer_id, idempotency_key) DO NOTHING
RETURNING id
""")
_KEYED = text(
    "SELECT * FROM usage_authorizations WHERE customer_id = :customer_id AND idempotency_key = :idempotency_key"
)
_LIVE = text("""
SELECT * FROM usage_authorizations
WHERE customer_id = :customer_id AND meter_id IS NULL AND allowed AND settled_at IS NULL AND expires_at > :as_of
ORDER BY expires_at, id LIMIT :limit
""")


async def take_spend_turn(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """Wait for the customer's turn to decide a money hold, held until the transaction ends."""
    await session.execute(_TAKE_TURN, {"customer_id": customer_id})


async def money_held_and_keyed(
    session: AsyncSession, customer_id: uuid.UUID, *, idempotency_key: str, as_of: datetime
) -> dict[str, Any]:
    """``held``: what the customer's live money holds hold at ``as_of``; beside it, the columns of
    the key's earlier authorization (``id`` None when there is none). Read after the turn is taken."""
    row = await session.execute(
        _HELD_AND_KEYED, {"customer_id": customer_id, "idempotency_key": idempotency_key, "as_of": as_of}
    )
    return dict(row.mappings().one())


async def insert_authorization_once(session: AsyncSession, authorization: dict[str, Any]) -> bool:
    """Insert a spend authorization; False when the customer's key was taken meanwhile."""
    return (await session.execute(_RECORD, authorization)).first() is not None


async def authorization_by_key(session: AsyncSession, customer_id: uuid.UUID, idempotency_key: str) -> dict[str, Any]:
    keyed = await session.execute(_KEYED, {"customer_id": customer_id, "idempotency_key": idempotency_key})
    return dict(keyed.mappings().one())


async def live_money_holds(
    session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime, limit: int
) -> list[dict[str, Any]]:
    """The customer's money holds live at ``as_of``, soonest to expire first."""
    rows = await session.execute(_LIVE, {"customer_id": customer_id, "as_of": as_of, "limit": limit})
    return [dict(row) for row in rows.mappings()]
