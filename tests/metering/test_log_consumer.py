"""The consumer of the event log counts what an edge published (format 2) without checking it
again, and counts it exactly as the direct path counts the same events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.usage_ingest import ingest_limits
from customers.service import NewCustomer, create_customer
from metering import authorizations
from metering.authorizations import AuthorizationRequest
from metering.event_log import FORMAT_HEADER, LogConfig, message_headers, messages_of
from metering.events import screen_events
from metering.log_consumer import UnknownFormat, count_logged, read_message
from metering.service import ingest, meter_rules
from tests.conftest import SentStatements

CONFIG = LogConfig(
    servers=("nats://127.0.0.1:4222",),
    stream="test",
    partitions=8,
    replicas=1,
    duplicate_window_seconds=120,
    publish_timeout_seconds=5,
    ack_wait_seconds=30,
)


def events(prefix: str, authorization_id: uuid.UUID, at: datetime) -> list[dict[str, Any]]:
    """One of each thing a counted row holds: dimensions (a plain one, a number, a missing one),
    values, distinct values, unicode and nested properties, an offset other than UTC, an
    authorization reference; and what goes to quarantine (unknown customer, unknown type) and a
    repeated id."""
    stamp = at.isoformat().replace("+00:00", "Z")
    in_paris = at.astimezone(timezone(timedelta(hours=2))).isoformat()
    return [
        {"id": f"{prefix}-1", "customer": "org_a", "type": "request.completed", "timestamp": stamp,
         "properties": {"model": "fast-1"}},
        {"id": f"{prefix}-2", "customer": "org_b", "type": "llm.tokens", "timestamp": in_paris,
         "properties": {"model": "größe-1 ✓", "tokens": Decimal("12.50"),
                        "meta": {"tags": ["ü", 1, None, True], "deep": {"x": Decimal("1E+3"), "s": "日本"}}}},
        {"id": f"{prefix}-3", "customer": "org_a", "type": "seat.active", "timestamp": stamp,
         "properties": {"user_id": "użytkownik-7"}},
        {"id": f"{prefix}-4", "customer": "org_a", "type": "request.completed", "timestamp": stamp,
         "properties": {"model": Decimal("2.50")}, "authorization": str(authorization_id)},
        {"id": f"{prefix}-5", "customer": "org_b", "type": "request.completed", "timestamp": stamp},
        {"id": f"{prefix}-6", "customer": "org_b", "type": "llm.tokens", "timestamp": stamp,
         "properties": {"model": "large-1", "tokens": "7"}, "other": "ignored"},
        {"id": f"{prefix}-7", "customer": "org_nobody", "type": "request.completed", "timestamp": stamp,
         "properties": {"model": "fast-1"}},
        {"id": f"{prefix}-8", "customer": "org_a", "type": "nothing.reads.this", "timestamp": stamp,
         "properties": {"a": [1, {"b": "ç"}]}},
        {"id": f"{prefix}-1", "customer": "org_a", "type": "request.completed", "timestamp": stamp,
         "properties": {"model": "again"}},
    ]  # fmt: skip


async def counted_rows(session: AsyncSession, prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the counting wrote for ids ``prefix-…``, with the prefix taken off."""
    strip = f"substr(event_id, {len(prefix) + 2})"
    queries = {
        "events": f"SELECT {strip}, customer_id, event_type, occurred_at, properties::text FROM events",
        "measurements": f"SELECT {strip}, customer_id, meter_id, occurred_at, dimensions::text, value, unique_value "
        "FROM usage_pending",
        "quarantine": f"SELECT {strip}, code, message, payload->'properties' FROM quarantined_events",
        "settled": f"SELECT substr(settled_by_event, {len(prefix) + 2}) FROM usage_authorizations",
    }
    rows = {}
    for name, query in queries.items():
        column = "settled_by_event" if name == "settled" else "event_id"
        found = await session.execute(
            text(f"{query} WHERE {column} LIKE :prefix ORDER BY 1"), {"prefix": f"{prefix}-%"}
        )
        rows[name] = [tuple(row) for row in found]
    return rows


async def test_the_log_counts_the_rows_the_direct_path_counts_for_the_same_events(
    session: AsyncSession, catalog: None, settings: Settings
) -> None:
    at = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=5)
    for external_id in ("org_a", "org_b"):
        new = NewCustomer(external_id=external_id, name=external_id, currency="USD", plan_key="pro",
                          started_at=at - timedelta(days=3))  # fmt: skip
        await create_customer(session, new, as_of=at)
    limits = ingest_limits(settings)
    holds = []
    for key in ("direct", "logged"):
        request = AuthorizationRequest("requests", authorizations.quantity_of(1, limits), key)
        done = await authorizations.authorize(session, "org_a", request, as_of=at, may_see=lambda _: True)
        holds.append(done.authorization.id)
    received_at = datetime.now(UTC)

    direct = await ingest(
        session, events("direct", holds[0], at), received_at=received_at, limits=limits, trace_id=None
    )

    screened = screen_events(
        events("logged", holds[1], at),
        meters_by_event_type=await meter_rules(session),
        received_at=received_at,
        limits=limits,
    )
    published = messages_of([event for _, event in screened.passed], CONFIG, max_payload=1024 * 1024)
    assert len(published) > 1, "the events travel in several partitions' messages"
    batches = [read_message(m.payload, message_headers(received_at, None)) for m in published]
    assert all(batch.events and not batch.unchecked for batch in batches), "format 2 is not checked again"
    [logged] = await count_logged(session, batches, limits=limits)

    assert (logged.accepted, sorted((r.code, r.message) for r in logged.rejected)) == (
        direct.accepted,
        sorted((r.code, r.message) for r in direct.rejected),
    )
    assert direct.accepted == 6 and {r.code for r in direct.rejected} == {"UNKNOWN_CUSTOMER", "UNKNOWN_EVENT_TYPE"}
    direct_rows, logged_rows = await counted_rows(session, "direct"), await counted_rows(session, "logged")
    assert logged_rows == direct_rows
    assert len(direct_rows["measurements"]) == 6 and direct_rows["settled"] == [("4",)]
    assert direct_rows["events"][1][3] == at, "the offset +02:00 names the same instant"
    assert "größe-1 ✓" in direct_rows["events"][1][4] and '"x": 1000' in direct_rows["events"][1][4]


async def test_the_edge_requests_of_one_transaction_are_stored_together_each_with_its_moment_and_trace(
    session: AsyncSession, catalog: None, settings: Settings, sent_statements: SentStatements
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    new = NewCustomer(
        external_id="org_a", name="org_a", currency="USD", plan_key="pro", started_at=at - timedelta(days=3)
    )
    await create_customer(session, new, as_of=at)
    limits = ingest_limits(settings)
    rules = await meter_rules(session)
    stamp = at.isoformat().replace("+00:00", "Z")
    requests = {  # three edge requests; the third repeats an event of the first
        "t1": ["e-1", "e-2", "e-3"],
        "t2": ["e-4", "e-5"],
        "t3": ["e-2", "e-6", "e-7"],
    }
    batches = []
    for seconds, (trace_id, ids) in enumerate(requests.items()):
        received_at = at + timedelta(seconds=10 * (seconds + 1))
        events = [{"id": i, "customer": "org_a", "type": "request.completed", "timestamp": stamp} for i in ids]
        events.append(
            {"id": f"{trace_id}-lost", "customer": "org_nobody", "type": "request.completed", "timestamp": stamp}
        )
        screened = screen_events(events, meters_by_event_type=rules, received_at=received_at, limits=limits)
        published = messages_of([event for _, event in screened.passed], CONFIG, max_payload=1024 * 1024)
        batches += [read_message(m.payload, message_headers(received_at, trace_id)) for m in published]
    sent_statements.clear()

    results = await count_logged(session, batches, limits=limits)

    assert [(r.accepted, r.duplicates, len(r.rejected)) for r in results] == [(3, 0, 1), (2, 0, 1), (2, 1, 1)]
    stored = [s for s in sent_statements if "INSERT INTO events" in s]
    assert len(stored) == 1, "one statement stores the events of every request in the transaction"
    rows = await session.execute(text("SELECT event_id, received_at, trace_id FROM events ORDER BY event_id"))
    assert [(event_id, int((received - at).total_seconds()), trace) for event_id, received, trace in rows] == [
        ("e-1", 10, "t1"), ("e-2", 10, "t1"), ("e-3", 10, "t1"), ("e-4", 20, "t2"), ("e-5", 20, "t2"),
        ("e-6", 30, "t3"), ("e-7", 30, "t3"),
    ]  # fmt: skip
    recorded = await session.execute(
        text("SELECT trace_id, received_at, accepted, duplicates, rejected::text FROM ingest_batches ORDER BY 1")
    )
    assert [(t, int((r - at).total_seconds()), a, d, j) for t, r, a, d, j in recorded] == [
        ("t1", 10, 3, 0, '{"UNKNOWN_CUSTOMER": 1}'),
        ("t2", 20, 2, 0, '{"UNKNOWN_CUSTOMER": 1}'),
        ("t3", 30, 2, 1, '{"UNKNOWN_CUSTOMER": 1}'),
    ]
    held = await session.execute(text("SELECT event_id, received_at FROM quarantined_events ORDER BY 1"))
    assert [(e, int((r - at).total_seconds())) for e, r in held] == [("t1-lost", 10), ("t2-lost", 20), ("t3-lost", 30)]


async def test_a_message_in_an_unknown_format_is_refused_before_it_is_read(settings: Settings) -> None:
    """A newer edge's format is left to a consumer that reads it, even when it would decode."""
    received_at = datetime.now(UTC)
    event = {"id": "e1", "customer": "org_a", "type": "request.completed", "timestamp": received_at.isoformat()}
    screened = screen_events(
        [event], meters_by_event_type=None, received_at=received_at, limits=ingest_limits(settings)
    )
    [message] = messages_of([shape for _, shape in screened.passed], CONFIG, max_payload=1024 * 1024)
    headers = message_headers(received_at, None)
    assert [e.event_id for e in read_message(message.payload, headers).events] == ["e1"]
    with pytest.raises(UnknownFormat, match="format '3', which this consumer does not read"):
        read_message(message.payload, {**headers, FORMAT_HEADER: "3"})


async def test_a_message_of_an_edge_before_format_2_is_checked_again_in_full(
    session: AsyncSession, catalog: None, settings: Settings
) -> None:
    """Format 1 (no format header: the events' own fields as clients sent them) still counts
    during an upgrade, through every check of the direct path."""
    received_at = datetime.now(UTC)
    await create_customer(session, NewCustomer("org_a", "A", "USD"), as_of=received_at)
    stamp = received_at.isoformat()
    legacy = [
        {"id": "old-1", "customer": "org_a", "type": "request.completed", "timestamp": stamp, "properties": {}},
        {"id": "old-2", "customer": "org_a", "type": "request.completed", "timestamp": "yesterday"},
    ]
    headers = message_headers(received_at, None)
    del headers[FORMAT_HEADER]
    batch = read_message(json.dumps(legacy).encode(), headers)
    assert (batch.events, len(batch.unchecked)) == ([], 2)
    [result] = await count_logged(session, [batch], limits=ingest_limits(settings))
    assert result.accepted == 1
    assert [(r.index, r.code) for r in result.rejected] == [(1, "INVALID_EVENT")]
