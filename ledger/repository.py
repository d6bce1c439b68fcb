"""SQL of the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.models import Account, CreditGrant, LedgerTransaction, Posting

NO_CUSTOMER = uuid.UUID(int=0)


async def account(
    session: AsyncSession, *, customer_id: uuid.UUID | None, kind: str, currency: str, as_of: datetime
) -> Account:
    """The account, created on first use (concurrent first uses create it once). Accounts are
    read far more often than created, so the read comes first."""
    query = select(Account).where(
        col(Account.kind) == kind,
        col(Account.currency) == currency,
        col(Account.customer_id).is_(None) if customer_id is None else col(Account.customer_id) == customer_id,
    )
    found = (await session.exec(query)).first()
    if found is not None:
        return found
    await session.execute(
        text(
            "INSERT INTO ledger_accounts (id, customer_id, kind, currency, balance, created_at) "
            "VALUES (:id, :customer_id, :kind, :currency, :balance, :created_at) "
            "ON CONFLICT ((coalesce(customer_id, '00000000-0000-0000-0000-000000000000'::uuid)), kind, currency) "
            "DO NOTHING"
        ),
        {
            "id": uuid.uuid4(),
            "customer_id": customer_id,
            "kind": kind,
            "currency": currency,
            "balance": 0 if customer_id else None,
            "created_at": as_of,
        },
    )
    return (await session.exec(query)).one()


async def claim_idempotency_key(session: AsyncSession, transaction: LedgerTransaction) -> bool:
    """Insert the transaction row unless its key (or, for a reversal, its original's reversal)
    exists; the unique indexes decide, waiting for a concurrent holder to commit or roll back."""
    row = await session.execute(
        text(
            "INSERT INTO ledger_transactions (id, kind, currency, customer_id, effective_at, recorded_at, actor, "
            "reason, trace_id, idempotency_key, request_hash, reverses_id) VALUES (:id, :kind, :currency, "
            ":customer_id, :effective_at, :recorded_at, :actor, :reason, :trace_id, :idempotency_key, "
            ":request_hash, :reverses_id) ON CONFLICT DO NOTHING RETURNING id"
        ),
        transaction.model_dump(),
    )
    return row.first() is not None


async def transaction_by_key(session: AsyncSession, key: str) -> LedgerTransaction | None:
    query = select(LedgerTransaction).where(col(LedgerTransaction.idempotency_key) == key)
    return (await session.exec(query)).first()


async def write_postings(session: AsyncSession, transaction_id: uuid.UUID, legs: Sequence[dict[str, Any]]) -> None:
    """Lock the customer accounts moved (one sorted FOR UPDATE), write the postings and move the
    cached balances: one round trip, through the ``ledger_post`` function (migration 0006)."""
    await session.execute(
        text(
            "SELECT ledger_post(:transaction_id, CAST(:accounts AS uuid[]), CAST(:amounts AS bigint[]), "
            "CAST(:grants AS uuid[]))"
        ),
        {
            "transaction_id": transaction_id,
            "accounts": [leg["account_id"] for leg in legs],
            "amounts": [leg["amount"] for leg in legs],
            "grants": [leg["grant_id"] for leg in legs],
        },
    )


async def grants_for_update(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, as_of: datetime, *, lock: bool = True
) -> list[CreditGrant]:
    """Grants that can be drawn at ``as_of``, locked in id order (unless only previewed)."""
    query = (
        select(CreditGrant)
        .where(
            col(CreditGrant.customer_id) == customer_id,
            col(CreditGrant.currency) == currency,
            col(CreditGrant.status) == "active",
            col(CreditGrant.remaining) > 0,
            col(CreditGrant.effective_at) <= as_of,
        )
        .order_by(col(CreditGrant.id))
    )
    if lock:
        query = query.with_for_update()
    return [g for g in await session.exec(query) if g.expires_at is None or g.expires_at > as_of]


async def grant(session: AsyncSession, grant_id: uuid.UUID, *, lock: bool = False) -> CreditGrant | None:
    query = select(CreditGrant).where(col(CreditGrant.id) == grant_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query)).first()


async def grant_of_transaction(session: AsyncSession, transaction_id: uuid.UUID) -> CreditGrant:
    query = select(CreditGrant).where(col(CreditGrant.transaction_id) == transaction_id)
    return (await session.exec(query)).one()


async def expiring_grants(session: AsyncSession, as_of: datetime) -> list[CreditGrant]:
    query = (
        select(CreditGrant)
        .where(col(CreditGrant.status) == "active", col(CreditGrant.expires_at) <= as_of)
        .order_by(col(CreditGrant.id))
        .with_for_update(skip_locked=True)
    )
    return list(await session.exec(query))


async def grants_page(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[CreditGrant]:
    query = select(CreditGrant).where(col(CreditGrant.customer_id) == customer_id)
    if after is not None:
        query = query.where(
            text("(credit_grants.created_at, credit_grants.id::text) < (:after_at, :after_id)").bindparams(
                after_at=after[0], after_id=after[1]
            )
        )
    query = query.order_by(col(CreditGrant.created_at).desc(), col(CreditGrant.id).desc()).limit(limit)
    return list(await session.exec(query))


ENTRIES = text("""
SELECT t.id, t.kind, t.effective_at, t.recorded_at, t.actor, t.reason, t.currency,
       (SELECT sum(p.amount) FROM ledger_postings p WHERE p.transaction_id = t.id AND p.amount > 0) AS size
FROM ledger_transactions t
WHERE t.customer_id = :customer_id
  AND (CAST(:after_at AS timestamptz) IS NULL
       OR (t.recorded_at, t.id::text) < (CAST(:after_at AS timestamptz), :after_id))
ORDER BY t.recorded_at DESC, t.id DESC
LIMIT :limit
""")


async def entries_page(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    params = {
        "customer_id": customer_id,
        "limit": limit,
        "after_at": after[0] if after else None,
        "after_id": after[1] if after else "",
    }
    return list((await session.execute(ENTRIES, params)).mappings())


async def entries_by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT t.id, t.kind, t.effective_at, t.recorded_at, t.actor, t.reason, t.currency, "
            "(SELECT sum(p.amount) FROM ledger_postings p WHERE p.transaction_id = t.id AND p.amount > 0) AS size "
            "FROM ledger_transactions t WHERE t.id = ANY(:ids) ORDER BY t.recorded_at, t.id"
        ),
        {"ids": list(ids)},
    )
    return list(rows.mappings())


async def customer_balances(session: AsyncSession, customer_id: uuid.UUID) -> dict[tuple[str, str], int]:
    rows = await session.execute(
        text("SELECT kind, currency, balance FROM ledger_accounts WHERE customer_id = :customer_id"),
        {"customer_id": customer_id},
    )
    return {(kind, currency): balance for kind, currency, balance in rows}


async def transaction(session: AsyncSession, transaction_id: uuid.UUID) -> LedgerTransaction | None:
    return await session.get(LedgerTransaction, transaction_id)


async def postings_of(session: AsyncSession, transaction_id: uuid.UUID) -> list[Posting]:
    query = select(Posting).where(col(Posting.transaction_id) == transaction_id).order_by(col(Posting.id))
    return list(await session.exec(query))


async def accounts_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Account]:
    return list(await session.exec(select(Account).where(col(Account.id).in_(list(ids)))))


async def reversal_of(session: AsyncSession, transaction_id: uuid.UUID) -> LedgerTransaction | None:
    query = select(LedgerTransaction).where(col(LedgerTransaction.reverses_id) == transaction_id)
    return (await session.exec(query)).first()
