"""SQL of one-off charges, minimum spends and prepaid commitments.

Each row is written with ``INSERT … ON CONFLICT (idempotency_key) DO NOTHING``: a concurrent
request with the same key waits for the first one's transaction, then finds its row, so a double
submit never writes twice and never fails on the unique key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import MinimumSpend, OneOffCharge, PrepaidCommitment
from ledger.models import CreditGrant
from ledger.repository import driver_connection

Row = TypeVar("Row", bound=SQLModel)


async def _rows_of(session: AsyncSession, model: type[Row], sql: str, params: Sequence[Any]) -> list[Row]:
    """Rows read through psycopg as ``model`` instances that belong to no session: the billing run
    reads pending charges and minimums for every invoice, and the ORM's cost per query shows."""
    connection = await driver_connection(session)
    cursor = await connection.execute(sql, params)
    names = [column.name for column in cursor.description or ()]
    return [model(**dict(zip(names, row, strict=True))) for row in await cursor.fetchall()]


async def _insert_once(session: AsyncSession, row: SQLModel, table: Any) -> bool:
    """Insert ``row`` unless its idempotency key exists; whether it was inserted."""
    values = {name: value for name, value in row.model_dump().items() if name != "sequence"}
    statement = insert(table).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    result = await session.execute(statement.returning(table.id))
    return result.first() is not None


async def _by_key(session: AsyncSession, table: Any, idempotency_key: str) -> Any:
    query = select(table).where(table.idempotency_key == idempotency_key)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def insert_one_off_charge(session: AsyncSession, charge: OneOffCharge) -> OneOffCharge:
    """The charge as stored: the new one, or the one its idempotency key already made."""
    await _insert_once(session, charge, OneOffCharge)
    return await _by_key(session, OneOffCharge, charge.idempotency_key)


async def one_off_charge(session: AsyncSession, charge_id: uuid.UUID, *, lock: bool = False) -> OneOffCharge | None:
    query = select(OneOffCharge).where(col(OneOffCharge.id) == charge_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def one_off_charge_by_cancel_key(session: AsyncSession, cancel_key: str) -> OneOffCharge | None:
    query = select(OneOffCharge).where(col(OneOffCharge.cancel_key) == cancel_key)
    return (await session.exec(query)).first()


async def pending_one_off_charges(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID, *, lock: bool
) -> list[OneOffCharge]:
    """The pending charges left for the subscription's next invoice, oldest first. Locked for an
    invoice about to claim them: a cancel then waits for that invoice, and finds the charge
    invoiced."""
    sql = (
        "SELECT * FROM one_off_charges WHERE customer_id = %s AND status = 'pending' AND subscription_id = %s "
        "ORDER BY created_at, id" + (" FOR UPDATE" if lock else "")
    )
    return await _rows_of(session, OneOffCharge, sql, (customer_id, subscription_id))


async def claim_one_off_charges(session: AsyncSession, charge_ids: Sequence[uuid.UUID], invoice_id: uuid.UUID) -> int:
    """Mark pending charges as billed by ``invoice_id``; how many were still pending."""
    result = await session.execute(
        update(OneOffCharge)
        .where(col(OneOffCharge.id).in_(charge_ids), col(OneOffCharge.status) == "pending")
        .values(status="invoiced", invoice_id=invoice_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def one_off_charges_page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    statuses: Sequence[str] | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[OneOffCharge]:
    """Newest first, keyset by (created_at, id)."""
    query = select(OneOffCharge).where(col(OneOffCharge.customer_id) == customer_id)
    if statuses:
        query = query.where(col(OneOffCharge.status).in_(statuses))
    if after is not None:
        moment, charge_id = after
        query = query.where(
            or_(
                col(OneOffCharge.created_at) < moment,
                and_(col(OneOffCharge.created_at) == moment, col(OneOffCharge.id) < uuid.UUID(charge_id)),
            )
        )
    query = query.order_by(col(OneOffCharge.created_at).desc(), col(OneOffCharge.id).desc()).limit(limit)
    return list(await session.exec(query))


async def insert_minimum_spend(session: AsyncSession, setting: MinimumSpend) -> MinimumSpend:
    await _insert_once(session, setting, MinimumSpend)
    return await _by_key(session, MinimumSpend, setting.idempotency_key)


async def minimum_spends_of(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID, *, before: datetime | None = None
) -> list[MinimumSpend]:
    """The subscription's minimum spend settings in the order they apply (effective moment, then
    the order they were made), those taking effect before ``before`` when given."""
    bound = "" if before is None else " AND effective_at < %s"
    sql = (
        f"SELECT * FROM minimum_spends WHERE customer_id = %s AND subscription_id = %s{bound} "
        "ORDER BY effective_at, sequence"
    )
    params = (customer_id, subscription_id) if before is None else (customer_id, subscription_id, before)
    return await _rows_of(session, MinimumSpend, sql, params)


async def insert_commitment(session: AsyncSession, commitment: PrepaidCommitment) -> tuple[PrepaidCommitment, bool]:
    """The commitment as stored, and whether this call made it."""
    created = await _insert_once(session, commitment, PrepaidCommitment)
    return await _by_key(session, PrepaidCommitment, commitment.idempotency_key), created


async def link_commitment(
    session: AsyncSession, commitment_id: uuid.UUID, *, grant_id: uuid.UUID, invoice_id: uuid.UUID
) -> None:
    await session.execute(
        update(PrepaidCommitment)
        .where(col(PrepaidCommitment.id) == commitment_id)
        .values(grant_id=grant_id, invoice_id=invoice_id)
        .execution_options(synchronize_session=False)
    )


async def commitments_page(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[tuple[PrepaidCommitment, CreditGrant | None]]:
    """Newest first, keyset by (created_at, id), each with its credit grant (what remains)."""
    query = (
        select(PrepaidCommitment, CreditGrant)
        .join(CreditGrant, col(CreditGrant.id) == col(PrepaidCommitment.grant_id), isouter=True)
        .where(col(PrepaidCommitment.customer_id) == customer_id)
    )
    if after is not None:
        moment, commitment_id = after
        query = query.where(
            or_(
                col(PrepaidCommitment.created_at) < moment,
                and_(
                    col(PrepaidCommitment.created_at) == moment,
                    col(PrepaidCommitment.id) < uuid.UUID(commitment_id),
                ),
            )
        )
    query = query.order_by(col(PrepaidCommitment.created_at).desc(), col(PrepaidCommitment.id).desc()).limit(limit)
    rows = await session.exec(query.execution_options(populate_existing=True))
    return [(commitment, grant) for commitment, grant in rows]
