"""SQL of the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.models import Account, CreditGrant, LedgerTransaction, Posting


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The session's own psycopg connection, inside its transaction: hot paths (the ledger's
    functions, ingestion, usage reads, the billing run) talk to it directly, without the ORM's
    per-statement cost (about three times the Python time of a statement through psycopg)."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get("tally_driver")
    if transaction is not None and cached is not None and cached[0] is transaction:
        return cached[1]  # a transaction keeps its connection: asking SQLAlchemy again costs ~0.2 ms
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    session.info["tally_driver"] = (session.sync_session.get_transaction(), driver)
    return driver


def share_between_tasks(session: AsyncSession) -> None:
    """Mark a session that concurrent tasks use at once (a GraphQL request's sibling resolvers):
    its statements then go one by one, never in a pipeline, because a statement another task sends
    while a pipeline is open breaks both."""
    session.info["tally_shared_between_tasks"] = True


def may_pipeline(session: AsyncSession) -> bool:
    return not session.info.get("tally_shared_between_tasks", False)


async def call_function(session: AsyncSession, query: str, parameters: Sequence[Any]) -> tuple[Any, ...]:
    """The one row a ledger function returns, called on the session's own psycopg connection."""
    driver = await driver_connection(session)
    row = await (await driver.execute(query, parameters)).fetchone()
    assert row is not None, "a ledger function returns one row"
    return row


# Which database a pooled connection is attached to: its server, name, oid and the server's start
# time, so that a database dropped and created again under the same name is another database.
DATABASE_IDENTITY = "SELECT d.oid, pg_postmaster_start_time() FROM pg_database d WHERE d.datname = current_database()"


async def database_identity(session: AsyncSession) -> tuple[Any, ...]:
    """The identity of the session's database, asked once per pooled connection (it lives as long
    as the connection does, in the pool's record of it)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    identity = raw.info.get("tally_database")
    if identity is None:
        driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
        row = await (await driver.execute(DATABASE_IDENTITY)).fetchone()
        assert row is not None
        identity = (driver.info.host, driver.info.port, driver.info.dbname, *row)
        raw.info["tally_database"] = identity
    return tuple(identity)


ACCOUNT = "SELECT * FROM ledger_account_row(%s, %s, %s, %s)"


async def account(
    session: AsyncSession, *, customer_id: uuid.UUID | None, kind: str, currency: str, as_of: datetime
) -> tuple[Account, bool]:
    """The account, created on first use (concurrent first uses create it once), and whether it
    was created by the current transaction."""
    account_id, balance, created_at, uncommitted = await call_function(
        session, ACCOUNT, (customer_id, kind, currency, as_of)
    )
    found = Account(
        id=account_id, customer_id=customer_id, kind=kind, currency=currency, balance=balance, created_at=created_at
    )
    return found, uncommitted


CONSUME_CREDITS = (
    "SELECT outcome, ledger_transaction, consumed FROM ledger_consume_credits"
    "(%s, %s, %s, %s::bigint, %s, %s, %s, %s, %s, %s)"
)


async def consume_credits(
    session: AsyncSession,
    *,
    transaction_id: uuid.UUID,
    customer_id: uuid.UUID,
    currency: str,
    amount: int,
    reason: str,
    actor: str,
    idempotency_key: str,
    request_hash: str,
    trace_id: str | None,
    as_of: datetime,
) -> tuple[str, uuid.UUID | None, int]:
    """Draw ``amount`` from the customer's grants in one round trip (the ``ledger_consume_credits``
    function, migration 0012): (outcome, transaction id, consumed). No ORM object is built: this
    is the hot path of invoicing."""
    parameters = (
        transaction_id,
        customer_id,
        currency,
        amount,
        reason,
        actor,
        idempotency_key,
        request_hash,
        trace_id,
        as_of,
    )
    row = await call_function(session, CONSUME_CREDITS, parameters)
    return row[0], row[1], row[2]


ADJUST_BALANCE = (
    "SELECT outcome, ledger_transaction FROM ledger_adjust_balance(%s, %s, %s, %s::bigint, %s, %s, %s, %s, %s)"
)


async def adjust_balance(
    session: AsyncSession, transaction: LedgerTransaction, amount: int
) -> tuple[str, uuid.UUID | None]:
    """Move the customer's receivable against adjustments in one round trip (the
    ``ledger_adjust_balance`` function, migration 0012): (outcome, transaction id)."""
    parameters = (
        transaction.id,
        transaction.customer_id,
        transaction.currency,
        amount,
        transaction.reason,
        transaction.actor,
        transaction.idempotency_key,
        transaction.request_hash,
        transaction.recorded_at,
    )
    row = await call_function(session, ADJUST_BALANCE, parameters)
    return row[0], row[1]


POST_ENTRY = (
    "SELECT outcome, ledger_transaction FROM ledger_post_entry"
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::uuid[], %s::text[], %s::bigint[])"
)


async def post_entry(
    session: AsyncSession, transaction: LedgerTransaction, legs: Sequence[tuple[uuid.UUID | None, str, int]]
) -> tuple[str, uuid.UUID | None]:
    """Claim ``transaction`` and post ``legs`` (owner or None for a system account, account kind,
    amount) in one round trip (the ``ledger_post_entry`` function, migration 0012): (outcome,
    transaction id)."""
    parameters = (
        transaction.id,
        transaction.kind,
        transaction.currency,
        transaction.customer_id,
        transaction.effective_at,
        transaction.recorded_at,
        transaction.actor,
        transaction.reason,
        transaction.trace_id,
        transaction.idempotency_key,
        transaction.request_hash,
        [owner for owner, _, _ in legs],
        [kind for _, kind, _ in legs],
        [amount for _, _, amount in legs],
    )
    row = await call_function(session, POST_ENTRY, parameters)
    return row[0], row[1]


GRANT_CREDITS = (
    "SELECT outcome, ledger_transaction, grant_sequence FROM ledger_grant_credits"
    "(%s, %s, %s, %s, %s::bigint, %s::integer, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


async def grant_credits(
    session: AsyncSession, transaction: LedgerTransaction, grant: CreditGrant, funded_by: str
) -> tuple[str, uuid.UUID | None, int | None]:
    """Write ``grant`` and its transaction, funded by the ``funded_by`` account, in one round trip
    (the ``ledger_grant_credits`` function, migration 0012): (outcome, transaction id, sequence)."""
    parameters = (
        transaction.id,
        grant.id,
        grant.customer_id,
        grant.currency,
        grant.amount,
        grant.priority,
        grant.effective_at,
        grant.expires_at,
        grant.source,
        funded_by,
        transaction.reason,
        transaction.actor,
        transaction.idempotency_key,
        transaction.request_hash,
        transaction.trace_id,
        transaction.recorded_at,
    )
    row = await call_function(session, GRANT_CREDITS, parameters)
    return row[0], row[1], row[2]


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


# Grant rows change through the ledger functions' SQL, not through ORM objects: every read of a
# grant refreshes any copy the session already holds (``populate_existing``).
async def drawable_grants(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, as_of: datetime
) -> list[CreditGrant]:
    """Grants that could be drawn at ``as_of``, read without locking (for previews)."""
    query = (
        select(CreditGrant)
        .where(
            col(CreditGrant.customer_id) == customer_id,
            col(CreditGrant.currency) == currency,
            col(CreditGrant.status) == "active",
            col(CreditGrant.remaining) > 0,
            col(CreditGrant.effective_at) <= as_of,
        )
        .execution_options(populate_existing=True)
    )
    return [g for g in await session.exec(query) if g.expires_at is None or g.expires_at > as_of]


async def grant(session: AsyncSession, grant_id: uuid.UUID, *, lock: bool = False) -> CreditGrant | None:
    query = select(CreditGrant).where(col(CreditGrant.id) == grant_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query)).first()


async def grant_of_transaction(session: AsyncSession, transaction_id: uuid.UUID) -> CreditGrant:
    query = (
        select(CreditGrant)
        .where(col(CreditGrant.transaction_id) == transaction_id)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).one()


async def expiring_grants(session: AsyncSession, as_of: datetime) -> list[CreditGrant]:
    query = (
        select(CreditGrant)
        .where(col(CreditGrant.status) == "active", col(CreditGrant.expires_at) <= as_of)
        .order_by(col(CreditGrant.id))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list(await session.exec(query))


async def grants_page(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[CreditGrant]:
    query = (
        select(CreditGrant).where(col(CreditGrant.customer_id) == customer_id).execution_options(populate_existing=True)
    )
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
