"""Exactly once, by property and under concurrency, through the real ingestion path."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.database import create_engine, session_factory
from app.jobs import roll_up_usage
from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from metering import usage as usage_service
from pricing.service import apply_catalog, list_meters

CATALOG = """
[[meters]]
key = "calls"
name = "Calls"
unit = "call"
event_type = "call"
aggregation = "count"
group_by = ["region"]

[[meters]]
key = "bytes"
name = "Bytes"
unit = "byte"
event_type = "call"
aggregation = "sum"
value_property = "size"
allow_negative = true  # the sizes drawn go below zero
group_by = ["region"]

[[meters]]
key = "peak"
name = "Peak"
unit = "unit"
event_type = "call"
aggregation = "max"
value_property = "size"
allow_negative = true  # the sizes drawn go below zero
group_by = ["region"]

[[meters]]
key = "users"
name = "Users"
unit = "user"
event_type = "call"
aggregation = "unique_count"
value_property = "user"
group_by = ["region"]

[[meters]]
key = "level"
name = "Level"
unit = "unit"
event_type = "call"
aggregation = "latest"
value_property = "size"
allow_negative = true  # the sizes drawn go below zero
group_by = ["region"]
"""
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=3)


def run(coroutine_factory: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_factory())


@pytest.fixture
def metered_database(database_url: str) -> str:
    async def prepare() -> None:
        engine = create_engine(database_url)
        async with session_factory(engine)() as session:
            await apply_catalog(session, CATALOG, as_of=NOW)
            await session.commit()
        await engine.dispose()

    run(prepare)
    return database_url


events_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(min_value=0, max_value=40).map(lambda i: f"evt-{i}"),
            "minute": st.integers(min_value=0, max_value=3 * 24 * 60 - 1),
            "second": st.integers(min_value=0, max_value=59),
            "region": st.sampled_from(["eu", "us", None]),
            "size": st.decimals(min_value=-1000, max_value=10**6, places=3, allow_nan=False),
            "user": st.sampled_from(["ana", "bo", "cy", 7, 8]),
        }
    ),
    min_size=1,
    max_size=60,
)


def expected_usage(sent: list[dict], start: datetime, end: datetime) -> dict[str, dict[Any, Decimal]]:
    """Computed directly from the distinct events (the first occurrence of an id counts)."""
    distinct: dict[str, dict] = {}
    for event in sent:
        distinct.setdefault(event["id"], event)
    kept = [e for e in distinct.values() if start <= e["at"] < end]
    result: dict[str, dict[Any, Decimal]] = {"calls": {}, "bytes": {}, "peak": {}, "users": {}, "level": {}}
    for region in {e["region"] for e in kept}:
        group = [e for e in kept if e["region"] == region]
        result["calls"][region] = Decimal(len(group))
        result["bytes"][region] = sum((e["size"] for e in group), Decimal(0))
        result["peak"][region] = max(e["size"] for e in group)
        result["users"][region] = Decimal(len({str(e["user"]) for e in group}))
        result["level"][region] = max(group, key=lambda e: (e["at"], e["id"]))["size"]
    return result


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sent=events_strategy,
    batch_size=st.integers(min_value=1, max_value=25),
    range_minutes=st.tuples(st.integers(0, 3 * 24 * 60), st.integers(0, 3 * 24 * 60)),
    shuffle_seed=st.integers(0, 1000),
    roll_up_every=st.integers(0, 3),
)
def test_usage_equals_a_direct_computation_from_distinct_events(
    metered_database: str,
    sent: list[dict],
    batch_size: int,
    range_minutes: tuple[int, int],
    shuffle_seed: int,
    roll_up_every: int,
) -> None:
    """Whatever part of the usage the roller has folded (never, or after every first, second or
    third batch), usage reads the same."""
    for event in sent:
        event["at"] = START + timedelta(minutes=event["minute"], seconds=event["second"])
    random.Random(shuffle_seed).shuffle(sent)
    low, high = sorted(range_minutes)
    start, end = START + timedelta(minutes=low, seconds=17), START + timedelta(minutes=high + 1, seconds=17)
    customer_key = f"c-{uuid.uuid4().hex[:8]}"
    prefix = customer_key + "-"

    async def scenario() -> dict[str, dict[Any, Decimal]]:
        engine = create_engine(metered_database)
        sessions = session_factory(engine)
        try:
            async with sessions() as session:
                customer = await create_customer(
                    session, NewCustomer(external_id=customer_key, name="P", currency="USD"), as_of=NOW
                )
                await session.commit()
            items = [
                {
                    "id": prefix + e["id"],
                    "customer": customer_key,
                    "type": "call",
                    "timestamp": e["at"].isoformat(),
                    "properties": {"region": e["region"], "size": str(e["size"]), "user": e["user"]},
                }
                for e in sent
            ]
            for number, offset in enumerate(range(0, len(items), batch_size), start=1):
                async with sessions() as session:
                    await ingest_and_commit(session, items[offset : offset + batch_size], Settings())
                if roll_up_every and number % roll_up_every == 0:
                    await roll_up_usage(sessions)
            async with sessions() as session:
                meters = await list_meters(session)
                usages = await usage_service.usage(session, customer.id, meters, start, end)
            return {
                u.meter.key: {
                    __import__("json").loads(d)["region"]: p.quantity(u.meter.aggregation)
                    for d, p in u.by_dimensions.items()
                }
                for u in usages
            }
        finally:
            await engine.dispose()

    assert run(scenario) == expected_usage(sent, start, end)


def test_concurrent_overlapping_batches_count_each_id_once(metered_database: str) -> None:
    """8 clients at once, sharing ids; the database's key decides, and deadlocks are retried.
    Meanwhile the roller folds small goes and a reader reads usage over and over: no read sees an
    event twice or loses one it saw (usage never goes down, never exceeds what was sent)."""

    async def scenario() -> tuple[int, int, int, Decimal, list[Decimal], int]:
        engine = create_engine(metered_database)
        sessions = session_factory(engine)
        async with sessions() as session:
            customer = await create_customer(
                session, NewCustomer(external_id="busy", name="B", currency="USD"), as_of=NOW
            )
            await session.commit()
        rng = random.Random(7)
        regions = ["eu", "us", "ap"]

        def batch(client: int) -> list[dict]:
            ids = rng.sample(range(600), 300)
            return [
                {
                    "id": f"shared-{i}",
                    "customer": "busy",
                    "type": "call",
                    "timestamp": (NOW - timedelta(minutes=i % 180)).isoformat(),
                    "properties": {"region": regions[i % 3], "size": i, "user": f"u{i % 50}"},
                }
                for i in ids
            ]

        batches = [batch(client) for client in range(8)]

        async def client(items: list[dict]) -> int:
            async with sessions() as session:
                return (await ingest_and_commit(session, items, Settings())).accepted

        async with sessions() as session:
            meters = [m for m in await list_meters(session) if m.key == "calls"]

        async def calls_counted() -> Decimal:
            async with sessions() as session:
                [calls] = await usage_service.usage(
                    session, customer.id, meters, NOW - timedelta(days=1), NOW + timedelta(hours=1)
                )
            return calls.quantity()

        ingesting = True
        reads: list[Decimal] = []

        async def roller() -> None:
            while ingesting:
                await roll_up_usage(sessions, limit=50)
                await asyncio.sleep(0)

        async def reader() -> None:
            while ingesting:
                reads.append(await calls_counted())

        background = [asyncio.create_task(roller()), asyncio.create_task(reader())]
        accepted = sum(await asyncio.gather(*(client(b) for b in batches)))
        ingesting = False
        await asyncio.gather(*background)
        await roll_up_usage(sessions)
        distinct = len({e["id"] for b in batches for e in b})
        async with sessions() as session:
            stored = (
                await session.execute(text("SELECT count(*) FROM events WHERE customer_id = :c"), {"c": customer.id})
            ).scalar_one()
            rolled_up = (
                await session.execute(
                    text("SELECT sum(event_count) FROM usage_rollups WHERE customer_id = :c AND meter_id = :m"),
                    {"c": customer.id, "m": meters[0].id},
                )
            ).scalar_one()
        counted = await calls_counted()
        await engine.dispose()
        return accepted, distinct, stored, counted, reads, rolled_up

    accepted, distinct, stored, counted, reads, rolled_up = run(scenario)
    assert accepted == distinct == stored
    assert counted == Decimal(distinct) == rolled_up
    assert reads, "usage was read while ingesting"
    assert reads == sorted(reads) and reads[-1] <= distinct, reads
