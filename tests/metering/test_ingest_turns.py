"""A server process stores and commits at most TALLY_INGEST_CONCURRENCY batches at once; the
others wait for their turn, and every batch is still counted once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import usage_ingest
from app.settings import Settings
from customers.service import NewCustomer, create_customer
from metering.service import roll_up
from tests.conftest import now


@pytest.mark.parametrize("turns", [1, 2])
async def test_at_most_the_configured_batches_are_counted_at_once(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    catalog: None,
    monkeypatch: pytest.MonkeyPatch,
    turns: int,
) -> None:
    await create_customer(session, NewCustomer(external_id="org_turns", name="Turns", currency="USD"), as_of=now())
    await session.commit()
    counting, most = 0, 0
    real_count_batch = usage_ingest.count_batch

    async def watched_count_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal counting, most
        counting += 1
        most = max(most, counting)
        await asyncio.sleep(0.05)  # long enough for every other batch to reach its turn
        try:
            return await real_count_batch(*args, **kwargs)
        finally:
            counting -= 1

    monkeypatch.setattr(usage_ingest, "count_batch", watched_count_batch)
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    async def send(number: int) -> int:
        batch = [
            {"id": f"turn-{number}-{i}", "customer": "org_turns", "type": "request.completed", "timestamp": at}
            for i in range(10)
        ]
        async with sessions() as own:
            result = await usage_ingest.ingest_and_commit(own, batch, Settings(ingest_concurrency=turns))
        return result.accepted

    accepted = await asyncio.gather(*(send(n) for n in range(6)))
    assert accepted == [10] * 6
    assert most == turns
    assert await roll_up(session) == 60, "every batch's measurements wait for the roller once"
    counted = await session.execute(text("SELECT sum(event_count) FROM usage_rollups"))
    assert counted.scalar_one() == 60
