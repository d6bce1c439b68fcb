"""The pool does not ping a connection before lending it (a round trip on every request); a
connection PostgreSQL has dropped since is found out by the transaction that uses it, which
``in_transaction`` runs again on a fresh connection, through SQLAlchemy and through psycopg alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from ledger.repository import driver_connection


async def through_sqlalchemy(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def through_psycopg(session: AsyncSession) -> int:
    cursor = await (await driver_connection(session)).execute("SELECT pg_backend_pid()")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("ask_pid", [through_sqlalchemy, through_psycopg])
async def test_a_transaction_on_a_connection_the_server_dropped_runs_again_on_a_fresh_one(
    sessions: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    ask_pid: Callable[[AsyncSession], Awaitable[int]],
) -> None:
    async with sessions() as first:
        dropped = await ask_pid(first)
        await first.commit()  # back in the pool, still open on this side
    await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
    attempts: list[int] = []

    async with sessions() as second:

        async def ask() -> int:
            attempts.append(1)
            return await ask_pid(second)

        answered = await in_transaction(second, ask)

    assert len(attempts) == 2, "the first attempt met the dropped connection"
    assert answered != dropped
