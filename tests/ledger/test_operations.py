"""The ledger's one-round-trip operations (migration 0012): retries return the first result,
refusals leave the caller's transaction usable, the functions refuse what no caller may ask for;
and system account ids, remembered per process, never cross from one database to another."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, session_factory
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import IdempotencyKeyReused
from tests.conftest import admin_execute, clone_database

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CUSTOMER = uuid.UUID("00000000-0000-0000-0000-0000000000c2")


async def _grant(session: AsyncSession, amount: int, key: str) -> None:
    await credit.grant_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="goodwill",
        actor="test",
        idempotency_key=key,
        as_of=NOW,
    )


async def _consume(session: AsyncSession, amount: int, key: str) -> credit.Consumption:
    return await credit.consume_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="invoice",
        actor="test",
        idempotency_key=key,
        as_of=NOW,
    )


async def _adjust(session: AsyncSession, amount: int, key: str):  # type: ignore[no-untyped-def]
    return await ledger.adjust_balance(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="late fee",
        actor="finance",
        idempotency_key=key,
        as_of=NOW,
    )


async def _scalar(session: AsyncSession, sql: str, **parameters: object) -> object:
    return (await session.execute(text(sql), parameters)).scalar_one()


async def test_a_retried_consumption_returns_what_the_first_drew(session: AsyncSession) -> None:
    await _grant(session, 1000, "g-1")
    first = await _consume(session, 600, "c-1")
    await session.commit()
    second = await _consume(session, 900, "c-2")
    assert (second.consumed, second.uncovered) == (400, 500)
    await session.commit()
    assert await _consume(session, 600, "c-1") == first == credit.Consumption(first.transaction_id, 600, 0)
    with pytest.raises(IdempotencyKeyReused):
        await _consume(session, 700, "c-1")
    assert await _scalar(session, "SELECT count(*) FROM ledger_transactions") == 3, "the transaction is still usable"
    await session.commit()
    assert (await ledger.balances(session, CUSTOMER, "USD")) == ledger.Balances(credits=0, outstanding=-1000)


async def test_a_retried_adjustment_returns_the_original_and_a_reused_key_is_refused(session: AsyncSession) -> None:
    first = await _adjust(session, 1234, "a-1")
    await session.commit()
    again = await _adjust(session, 1234, "a-1")
    assert (again.id, again.idempotency_key, again.request_hash) == (first.id, "a-1", first.request_hash)
    with pytest.raises(IdempotencyKeyReused):
        await _adjust(session, 999, "a-1")
    assert await _scalar(session, "SELECT count(*) FROM ledger_transactions") == 1, "the transaction is still usable"
    await session.commit()
    assert (await ledger.balances(session, CUSTOMER, "USD")).outstanding == 1234


async def test_an_entry_posts_its_legs_once_and_a_reused_key_is_refused(session: AsyncSession) -> None:
    def invoice(total: int) -> ledger.Entry:
        return ledger.Entry(
            kind="invoice",
            currency="USD",
            customer_id=CUSTOMER,
            effective_at=NOW,
            actor="billing",
            reason="invoice for November",
            idempotency_key="invoice-1",
            request={"total": total},
        )

    legs = [(CUSTOMER, "receivable", 1500), (None, "subscription_revenue", -1000), (None, "usage_revenue", -500)]
    first = await ledger.post_entry(session, invoice(1500), [*legs, (None, "promotions", 0)], as_of=NOW)
    await session.commit()
    assert await ledger.post_entry(session, invoice(1500), legs, as_of=NOW) == first
    with pytest.raises(IdempotencyKeyReused):
        await ledger.post_entry(session, invoice(1600), legs, as_of=NOW)
    with pytest.raises(ValueError):
        await ledger.post_entry(session, invoice(1500), legs[:2], as_of=NOW)
    await session.commit()
    assert await _scalar(session, "SELECT count(*) FROM ledger_postings") == 3, "the leg of zero is left out"
    assert (await ledger.balances(session, CUSTOMER, "USD")).outstanding == 1500


async def test_a_retried_grant_returns_the_same_grant(session: AsyncSession) -> None:
    await _grant(session, 500, "g-1")
    await session.commit()
    await _consume(session, 200, "c-1")
    await session.commit()
    [found] = await credit.grants(session, CUSTOMER, after=None, limit=5)
    again = await credit.grant_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=500,
        reason="goodwill",
        actor="test",
        idempotency_key="g-1",
        as_of=NOW,
    )
    assert (again.id, again.remaining) == (found.id, 300)


async def test_grant_reads_see_what_the_functions_wrote(session: AsyncSession) -> None:
    """Grants change in SQL, so a grant the session already holds is read again, not trusted."""
    await _grant(session, 1000, "g-1")
    [before] = await credit.grants(session, CUSTOMER, after=None, limit=5)
    await _consume(session, 300, "c-1")
    [after] = await credit.grants(session, CUSTOMER, after=None, limit=5)
    assert after is before and after.remaining == 700
    voided = await credit.void_grant(
        session, grant_id=before.id, reason="mistake", actor="t", idempotency_key="v-1", as_of=NOW
    )
    await session.commit()
    assert (voided.status, voided.remaining) == ("voided", 0)
    assert (await ledger.balances(session, CUSTOMER, "USD")) == ledger.Balances(credits=0, outstanding=-300)


async def test_ledger_post_refuses_legs_that_do_not_balance_at_once(session: AsyncSession) -> None:
    receivable = await ledger.account(session, "receivable", "USD", NOW, CUSTOMER)
    adjustments = await ledger.account(session, "adjustments", "USD", NOW)
    entry = ledger.Entry(
        kind="transfer",
        currency="USD",
        customer_id=CUSTOMER,
        effective_at=NOW,
        actor="t",
        reason="r",
        idempotency_key="k",
    )
    transaction, _ = await ledger.claim(session, entry, as_of=NOW)
    for accounts, amounts in (([receivable.id, adjustments.id], [100, -99]), ([receivable.id], [0])):
        with pytest.raises(DBAPIError, match="unbalanced"):
            await session.execute(
                text(
                    "SELECT ledger_post(:t, CAST(:accounts AS uuid[]), CAST(:amounts AS bigint[]), CAST(:grants AS uuid[]))"
                ),
                {"t": transaction.id, "accounts": accounts, "amounts": amounts, "grants": [None] * len(accounts)},
            )
        await session.rollback()
        transaction, _ = await ledger.claim(session, entry, as_of=NOW)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("ledger_consume_credits(gen_random_uuid(), :c, 'USD', 0, 'r', 'a', 'k', 'h', NULL, now())", "positive"),
        ("ledger_consume_credits(gen_random_uuid(), :c, 'USD', -5, 'r', 'a', 'k', 'h', NULL, now())", "positive"),
        ("ledger_adjust_balance(gen_random_uuid(), :c, 'USD', 0, 'r', 'a', 'k', 'h', now())", "not be zero"),
        (
            "ledger_grant_credits(gen_random_uuid(), gen_random_uuid(), :c, 'USD', -1, 0, now(), NULL, 'manual', "
            "'adjustments', 'r', 'a', 'k', 'h', NULL, now())",
            "positive",
        ),
    ],
)
async def test_the_functions_refuse_amounts_no_caller_may_ask_for(
    session: AsyncSession, call: str, message: str
) -> None:
    with pytest.raises(DBAPIError, match=message):
        await session.execute(text(f"SELECT * FROM {call}"), {"c": CUSTOMER})
    await session.rollback()
    assert await _scalar(session, "SELECT count(*) FROM ledger_transactions") == 0


async def test_consumption_cannot_take_a_grant_below_zero(session: AsyncSession) -> None:
    """However the function is called, the grant's own constraint is the last word."""
    await _grant(session, 100, "g-1")
    await session.commit()
    assert (await _consume(session, 250, "c-1")).consumed == 100
    with pytest.raises(DBAPIError, match="credit_grants_remaining_in_range"):
        await session.execute(text("UPDATE credit_grants SET remaining = remaining - 1"))
    await session.rollback()


async def _system_account_ids(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The adjustments account as the cache gives it, and as the database stores it."""
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        first = await ledger.account(session, "adjustments", "USD", NOW)
        await session.commit()
        again = await ledger.account(session, "adjustments", "USD", NOW)
        stored = await _scalar(session, "SELECT id FROM ledger_accounts WHERE kind = 'adjustments'")
    await engine.dispose()
    assert again.id == first.id
    return again.id, stored  # type: ignore[return-value]


async def test_system_account_ids_never_cross_databases(server_url: str, database_url: str) -> None:
    """Two databases at once, and one dropped and made again under the same name: each sees the
    id of its own row."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    try:
        cached, stored = await _system_account_ids(database_url)
        assert cached == stored
        other_cached, other_stored = await _system_account_ids(clone_database(server_url, name))
        assert other_cached == other_stored != stored
        admin_execute(server_url, f"DROP DATABASE {name} WITH (FORCE)")
        again_cached, again_stored = await _system_account_ids(clone_database(server_url, name))
        assert again_cached == again_stored != other_stored
    finally:
        admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_system_account_is_remembered_once_committed(session: AsyncSession) -> None:
    created = await ledger.account(session, "refunds", "EUR", NOW)
    await session.rollback()
    made_again = await ledger.account(session, "refunds", "EUR", NOW)
    assert made_again.id != created.id, "the rolled-back account was not remembered"
    await session.commit()
    remembered = await ledger.account(session, "refunds", "EUR", NOW)
    assert remembered.id == made_again.id
    assert await ledger.account(session, "refunds", "EUR", NOW) is remembered
    assert await _scalar(session, "SELECT id FROM ledger_accounts WHERE kind = 'refunds'") == made_again.id
