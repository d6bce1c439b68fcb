"""The webhook events outbox as the rest of Tally writes to it: one event per key, in the change's
own transaction, each numbered by its resource's version."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from notifications.webhook_events import Event, emit
from tests.conftest import now


def invoice_event(key: str, invoice_id: str, status: str) -> Event:
    return Event(key, "invoice.issued", "Invoice", invoice_id, {"id": invoice_id, "status": status})


async def events(session: AsyncSession) -> list[tuple[str, str, int, dict[str, object]]]:
    rows = await session.execute(
        text("SELECT event_key, resource_id, resource_version, data FROM webhook_events ORDER BY resource_version")
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_an_event_is_recorded_once_per_key_and_versioned_per_resource(session: AsyncSession) -> None:
    first = await emit(session, invoice_event("a", "inv_1", "OPEN"), as_of=now())
    again = await emit(session, invoice_event("a", "inv_1", "OPEN"), as_of=now())
    second = await emit(session, invoice_event("b", "inv_1", "PAID"), as_of=now())
    other = await emit(session, invoice_event("c", "inv_2", "OPEN"), as_of=now())
    await session.commit()

    assert first and second and other and again is None
    assert await events(session) == [
        ("a", "inv_1", 1, {"id": "inv_1", "status": "OPEN"}),
        ("c", "inv_2", 1, {"id": "inv_2", "status": "OPEN"}),
        ("b", "inv_1", 2, {"id": "inv_1", "status": "PAID"}),
    ]


async def test_a_rolled_back_change_tells_nothing(session: AsyncSession) -> None:
    await emit(session, invoice_event("a", "inv_1", "OPEN"), as_of=now())
    await session.rollback()
    assert await events(session) == []


async def test_an_unknown_type_is_a_programming_error(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"):
        await emit(session, Event("k", "invoice.exploded", "Invoice", "x", {}), as_of=now())


async def test_concurrent_events_of_one_resource_get_distinct_increasing_versions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def one(n: int) -> None:
        async with sessions() as session:
            await emit(session, invoice_event(f"k{n}", "inv_1", "OPEN"), as_of=now())
            await emit(session, invoice_event("shared", "inv_1", "OPEN"), as_of=now())
            await session.commit()

    await asyncio.gather(*(one(n) for n in range(16)))
    async with sessions() as session:
        found = await events(session)
    versions = [version for _, _, version, _ in found]
    assert len(found) == 17 and len(set(versions)) == 17
    assert [key for key, *_ in found].count("shared") == 1
