"""The ledger against the real database: grants, consumption order, expiry, voids, adjustments,
idempotency, guarantees enforced by PostgreSQL, and races."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, session_factory
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import IdempotencyKeyReused, InvalidInput
from ledger.verify import verify

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CUSTOMER = uuid.UUID("00000000-0000-0000-0000-0000000000c1")


async def grant(session: AsyncSession, amount: int, key: str, **options: object):  # type: ignore[no-untyped-def]
    found = await credit.grant_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="goodwill",
        actor="test",
        idempotency_key=key,
        as_of=NOW,
        **options,  # type: ignore[arg-type]
    )
    await session.commit()
    return found


async def consume(session: AsyncSession, amount: int, key: str, as_of: datetime = NOW) -> credit.Consumption:
    result = await credit.consume_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="invoice",
        actor="test",
        idempotency_key=key,
        as_of=as_of,
    )
    await session.commit()
    return result


async def test_consumption_follows_priority_then_expiry_then_age(session: AsyncSession) -> None:
    late = await grant(session, 1000, "g-never", priority=10)
    soon = await grant(session, 1000, "g-soon", priority=10, expires_at=NOW + timedelta(days=5))
    later = await grant(session, 1000, "g-later", priority=10, expires_at=NOW + timedelta(days=30))
    first = await grant(session, 500, "g-first", priority=1)
    result = await consume(session, 2200, "c-1")
    assert (result.consumed, result.uncovered) == (2200, 0)
    remaining = {g.id: g.remaining for g in await credit.grants(session, CUSTOMER, after=None, limit=10)}
    assert remaining == {first.id: 0, soon.id: 0, later.id: 300, late.id: 1000}
    assert (await ledger.balances(session, CUSTOMER, "USD")) == ledger.Balances(credits=1300, outstanding=-2200)


async def test_consumption_returns_what_it_could_not_cover(session: AsyncSession) -> None:
    await grant(session, 700, "g-1")
    result = await consume(session, 1000, "c-1")
    assert (result.consumed, result.uncovered) == (700, 300)
    assert await consume(session, 50, "c-2") == credit.Consumption(None, 0, 50)


async def test_same_key_same_request_returns_the_first_result(session: AsyncSession) -> None:
    first = await grant(session, 1000, "g-1")
    again = await grant(session, 1000, "g-1")
    assert again.id == first.id
    with pytest.raises(IdempotencyKeyReused):
        await grant(session, 2000, "g-1")
    await session.rollback()
    assert (await ledger.balances(session, CUSTOMER, "USD")).credits == 1000


async def test_expiry_posts_the_remainder_to_breakage_once(session: AsyncSession) -> None:
    expiring = await grant(session, 1000, "g-1", expires_at=NOW + timedelta(days=1))
    await consume(session, 400, "c-1")
    later = NOW + timedelta(days=2)
    assert await credit.expire_grants(session, as_of=later) == 1
    await session.commit()
    assert await credit.expire_grants(session, as_of=later) == 0
    await session.commit()
    [found] = await credit.grants(session, CUSTOMER, after=None, limit=5)
    assert (found.id, found.status, found.remaining) == (expiring.id, "expired", 0)
    breakage = (
        await session.execute(
            text(
                "SELECT sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
                "WHERE a.kind = 'breakage'"
            )
        )
    ).scalar_one()
    assert breakage == -600
    assert (await consume(session, 100, "c-2", as_of=later)).uncovered == 100


async def test_void_takes_back_only_what_remains(session: AsyncSession) -> None:
    found = await grant(session, 1000, "g-1")
    await consume(session, 250, "c-1")
    voided = await credit.void_grant(
        session, grant_id=found.id, reason="granted by mistake", actor="test", idempotency_key="v-1", as_of=NOW
    )
    await session.commit()
    assert (voided.status, voided.remaining) == ("voided", 0)
    assert (await ledger.balances(session, CUSTOMER, "USD")) == ledger.Balances(credits=0, outstanding=-250)


async def test_adjustments_move_the_receivable(session: AsyncSession) -> None:
    await ledger.adjust_balance(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=1234,
        reason="late fee",
        actor="finance",
        idempotency_key="a-1",
        as_of=NOW,
    )
    await ledger.adjust_balance(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=-234,
        reason="goodwill",
        actor="finance",
        idempotency_key="a-2",
        as_of=NOW,
    )
    await session.commit()
    assert (await ledger.balances(session, CUSTOMER, "USD")).outstanding == 1000


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 2**63}, "amount"),
        ({"reason": "  "}, "reason"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expiresAt"),
        ({"idempotency_key": ""}, "idempotencyKey"),
    ],
)
async def test_bad_input_names_the_field_and_changes_nothing(session: AsyncSession, options: dict, field: str) -> None:
    arguments = {
        "customer_id": CUSTOMER,
        "currency": "USD",
        "amount": 100,
        "reason": "r",
        "actor": "t",
        "idempotency_key": "k",
        "as_of": NOW,
        **options,
    }
    with pytest.raises(InvalidInput) as raised:
        await credit.grant_credits(session, **arguments)
    assert raised.value.field == field
    await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM ledger_transactions"))).scalar_one() == 0


async def test_postings_and_transactions_cannot_change(session: AsyncSession) -> None:
    await grant(session, 1000, "g-1")
    for statement in (
        "UPDATE ledger_postings SET amount = amount * 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_transactions SET reason = 'other'",
        "DELETE FROM ledger_transactions",
    ):
        with pytest.raises(DBAPIError, match="immutable"):
            await session.execute(text(statement))
        await session.rollback()


async def test_an_unbalanced_transaction_is_refused_at_commit(session: AsyncSession) -> None:
    await grant(session, 1000, "g-1")
    transaction_id, account_id = (
        await session.execute(text("SELECT transaction_id, account_id FROM ledger_postings LIMIT 1"))
    ).one()
    await session.execute(
        text("INSERT INTO ledger_postings (transaction_id, account_id, amount) VALUES (:t, :a, 1)"),
        {"t": transaction_id, "a": account_id},
    )
    with pytest.raises(DBAPIError, match="unbalanced"):
        await session.commit()
    await session.rollback()


async def test_verify_finds_a_planted_corruption(session: AsyncSession) -> None:
    await grant(session, 1000, "g-1")
    await session.execute(text("ALTER TABLE ledger_postings DISABLE TRIGGER USER"))
    await session.execute(text("UPDATE ledger_postings SET amount = amount + 1 WHERE amount > 0"))
    await session.execute(text("ALTER TABLE ledger_postings ENABLE TRIGGER USER"))
    await session.commit()
    found = {v.check for v in await verify(session)}
    assert {"unbalanced transaction", "currency does not sum to zero"} <= found
    await session.execute(text("ALTER TABLE ledger_postings DISABLE TRIGGER USER"))
    await session.execute(text("UPDATE ledger_postings SET amount = amount - 1 WHERE amount > 0"))
    await session.execute(text("ALTER TABLE ledger_postings ENABLE TRIGGER USER"))
    await session.commit()
    assert await verify(session) == []


async def test_sixteen_concurrent_calls_with_one_key_make_one_transaction(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)

    async def call() -> uuid.UUID:
        async with sessions() as session:
            found = await grant(session, 500, "same-key")
            return found.id

    ids = await asyncio.gather(*(call() for _ in range(16)))
    async with sessions() as session:
        count = (await session.execute(text("SELECT count(*) FROM ledger_transactions"))).scalar_one()
    await engine.dispose()
    assert len(set(ids)) == 1 and count == 1


async def test_fifty_concurrent_consumptions_never_overdraw(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await grant(session, 1000, "g-1")

    async def call(index: int) -> int:
        async with sessions() as session:
            return (await consume(session, 30, f"c-{index}")).consumed

    consumed = await asyncio.gather(*(call(i) for i in range(50)))
    async with sessions() as session:
        remaining = (await session.execute(text("SELECT remaining FROM credit_grants"))).scalar_one()
    await engine.dispose()
    assert sum(consumed) == 1000 and remaining == 0


async def test_a_reversal_mirrors_the_original_once(session: AsyncSession) -> None:
    found = await grant(session, 1000, "g-1")
    spent = await consume(session, 300, "c-1")
    assert spent.transaction_id is not None
    await ledger.reverse_transaction(
        session,
        transaction_id=spent.transaction_id,
        reason="charged by mistake",
        actor="finance",
        idempotency_key="r-1",
        as_of=NOW,
    )
    await session.commit()
    assert (await ledger.balances(session, CUSTOMER, "USD")) == ledger.Balances(credits=1000, outstanding=0)
    with pytest.raises(InvalidInput, match="already been reversed"):
        await ledger.reverse_transaction(
            session,
            transaction_id=spent.transaction_id,
            reason="again",
            actor="finance",
            idempotency_key="r-2",
            as_of=NOW,
        )
    await session.rollback()
    await consume(session, 1000, "c-2")
    with pytest.raises(InvalidInput, match="already been used"):
        await ledger.reverse_transaction(
            session,
            transaction_id=found.transaction_id,
            reason="undo grant",
            actor="finance",
            idempotency_key="r-3",
            as_of=NOW,
        )
    await session.rollback()


async def test_rings_of_transfers_never_surface_a_deadlock(database_url: str) -> None:
    """A→B, B→C, C→A at once, many times: sorted locks (and retries) keep every call whole."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    owners = [uuid.uuid4() for _ in range(3)]
    async with sessions() as session:
        accounts = [await ledger.account(session, "receivable", "USD", NOW, owner) for owner in owners]
        await session.commit()

    async def transfer(number: int) -> None:
        source, target = accounts[number % 3], accounts[(number + 1) % 3]
        async with sessions() as session:
            entry = ledger.Entry(
                kind="transfer",
                currency="USD",
                customer_id=None,
                effective_at=NOW,
                actor="test",
                reason="ring",
                idempotency_key=f"ring-{number}",
                request={"n": number},
            )
            transaction, _ = await ledger.claim(session, entry, as_of=NOW)
            await ledger.post(session, transaction, [ledger.Leg(target, 7), ledger.Leg(source, -7)])
            await session.commit()

    await asyncio.gather(*(transfer(n) for n in range(60)))
    async with sessions() as session:
        found = (
            await session.execute(text("SELECT count(*) FROM ledger_transactions WHERE kind = 'transfer'"))
        ).scalar_one()
    await engine.dispose()
    assert found == 60


async def test_mixing_currencies_is_refused(session: AsyncSession) -> None:
    usd = await ledger.account(session, "receivable", "USD", NOW, CUSTOMER)
    eur = await ledger.account(session, "adjustments", "EUR", NOW)
    entry = ledger.Entry(
        kind="transfer",
        currency="USD",
        customer_id=CUSTOMER,
        effective_at=NOW,
        actor="t",
        reason="mixed",
        idempotency_key="mixed",
    )
    transaction, _ = await ledger.claim(session, entry, as_of=NOW)
    with pytest.raises(InvalidInput) as raised:
        await ledger.post(session, transaction, [ledger.Leg(usd, 100), ledger.Leg(eur, -100)])
    assert raised.value.field == "currency"
    await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM ledger_transactions"))).scalar_one() == 0
