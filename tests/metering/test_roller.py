"""The roller folds counted usage into the rollups: each measurement once, in bounded goes, one
roller at a time, with usage, series and the watermark reading the same before and after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import roll_up_usage
from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from metering import usage as usage_service
from metering.service import roll_up
from pricing.service import list_meters
from tests.conftest import now


async def what_usage_reads(session: AsyncSession, customer_id, start: datetime, end: datetime) -> tuple:  # type: ignore[no-untyped-def]
    """Usage, and series by day and by hour, the last also to a moment inside an hour that has
    an event after it (a series' buckets are whole hours)."""
    meters = await list_meters(session)
    usages = await usage_service.usage(session, customer_id, meters, start, end)
    by_meter = {u.meter.key: {d: p.quantity(u.meter.aggregation) for d, p in u.by_dimensions.items()} for u in usages}
    seats = next(m for m in meters if m.key == "seats")
    requests = next(m for m in meters if m.key == "requests")
    daily = await usage_service.usage_series(session, customer_id, seats, start, end, "DAY")
    hourly = await usage_service.usage_series(session, customer_id, seats, start, end, "HOUR")
    mid_hour = start.replace(minute=0) + timedelta(hours=47, minutes=30)
    to_mid_hour = await usage_service.usage_series(session, customer_id, requests, start, mid_hour, "HOUR")
    return by_meter, daily, hourly, to_mid_hour, await usage_service.watermark(session, customer_id)


async def test_usage_reads_the_same_before_and_after_the_roller_folds_it_in_bounded_goes(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    customer = await create_customer(
        session, NewCustomer(external_id="org_roll", name="Roll", currency="USD"), as_of=now()
    )
    await session.commit()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    events = []
    for i in range(30):
        at = (base + timedelta(hours=i * 1.5, minutes=7)).isoformat()
        events += [
            {"id": f"roll-r{i}", "customer": "org_roll", "type": "request.completed", "timestamp": at,
             "properties": {"model": ["fast-1", "large-1"][i % 2]}},
            {"id": f"roll-t{i}", "customer": "org_roll", "type": "llm.tokens", "timestamp": at,
             "properties": {"model": "fast-1", "tokens": f"{i}.5"}},
            {"id": f"roll-s{i}", "customer": "org_roll", "type": "seat.active", "timestamp": at,
             "properties": {"user_id": f"u{i % 7}"}},
        ]  # fmt: skip
    await ingest_and_commit(session, events[:45], Settings())
    await ingest_and_commit(session, events[45:], Settings())
    start, end = base - timedelta(hours=3, minutes=20), base + timedelta(days=3)
    before = await what_usage_reads(session, customer.id, start, end)
    await session.commit()

    assert await roll_up_usage(sessions, limit=40) == 90, "three goes of at most 40: 40, 40, 10"

    waiting = await session.execute(text("SELECT count(*) FROM usage_pending"))
    assert waiting.scalar_one() == 0
    after = await what_usage_reads(session, customer.id, start, end)
    assert after == before
    by_meter, _, _, to_mid_hour, watermark = after
    assert to_mid_hour[-1].quantity == 1, "the last hour's bucket holds its event at :37, after the :30 asked"
    assert by_meter["requests"] == {'{"model":"fast-1"}': 15, '{"model":"large-1"}': 15}
    assert by_meter["tokens"] == {'{"model":"fast-1"}': sum(Decimal(f"{i}.5") for i in range(30))}
    assert list(by_meter["seats"].values()) == [7]
    assert watermark == base + timedelta(hours=29 * 1.5, minutes=7)
    assert await roll_up_usage(sessions) == 0, "nothing is folded twice"
    counted = await session.execute(text("SELECT sum(event_count) FROM usage_rollups"))
    assert counted.scalar_one() == 90


async def test_one_roller_at_a_time(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    await create_customer(session, NewCustomer(external_id="org_turn", name="Turn", currency="USD"), as_of=now())
    await session.commit()
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    event = {"id": "turn-1", "customer": "org_turn", "type": "request.completed", "timestamp": at}
    await ingest_and_commit(session, [event], Settings())

    async with sessions() as first, sessions() as second:
        assert await roll_up(first) == 1
        assert await roll_up(second) is None, "the second waits for its next go instead of the first's rows"
        await first.commit()
        assert await roll_up(second) == 0, "the turn passes when the holder's transaction ends"
