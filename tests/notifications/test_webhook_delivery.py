"""Outbound webhooks delivered to a real HTTP receiver in the test process, which verifies every
signature with its own implementation of the Standard Webhooks specification: every event
arrives at least once and signed, a failing or hanging receiver is retried with backoff and gets
its backlog when it recovers, a rotated secret signs beside the new one during the overlap, an
endpoint failing too long is disabled with an anomaly, and racing senders send each event once."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise

from fastapi import FastAPI
from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import prune_webhook_deliveries
from app.metrics import REGISTRY
from app.settings import Settings
from app.webhook_sender import send_webhooks
from notifications import webhook_endpoints as endpoints
from notifications.webhook_delivery import Sending
from notifications.webhook_endpoints import EndpointInput
from notifications.webhook_events import API_VERSION, Event, emit
from tests.app.test_metrics import Series, parse, value
from tests.conftest import now
from tests.notifications.webhook_receiver import Receiver, signature_valid

FAST = Sending(timeout_seconds=0.5)


async def emit_events(
    sessions: async_sessionmaker[AsyncSession], count: int, *, as_of: datetime, type: str = "customer.updated"
) -> list[uuid.UUID]:
    ids = []
    async with sessions() as session:
        for number in range(count):
            key = f"test:{uuid.uuid4()}"
            event = Event(key, type, "Customer", f"cus_{number}", {"id": f"cus_{number}", "name": f"Customer {number}"})
            created = await emit(session, event, as_of=as_of)
            assert created is not None
            ids.append(created)
        await session.commit()
    return ids


async def register(
    sessions: async_sessionmaker[AsyncSession], url: str, *, types: tuple[str, ...] | None = None, as_of: datetime
) -> uuid.UUID:
    async with sessions() as session:
        endpoint = await endpoints.create_endpoint(session, EndpointInput(url, types), as_of=as_of)
        await session.commit()
    return endpoint.id


async def secret_of(session: AsyncSession, endpoint_id: uuid.UUID) -> str:
    return str(
        (
            await session.execute(text("SELECT secret FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})
        ).scalar_one()
    )


async def test_every_event_arrives_signed_and_a_failing_receiver_gets_its_backlog_after_backoff(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    start = now()
    everything = await register(sessions, receiver.url("/all"), as_of=start)
    await register(sessions, receiver.url("/paid"), types=("invoice.paid",), as_of=start)
    sent = await emit_events(sessions, 4, as_of=start)
    secret = await secret_of(session, everything)
    receiver.mode = "fail"

    first = await send_webhooks(sessions, FAST, as_of=start)
    assert (first.fanned_out, first.retrying, first.delivered) == (4, 4, 0)
    assert len(receiver.requests("/all")) == 4 and receiver.requests("/paid") == []
    # Not yet due: the first retry waits 5 s (±10%).
    assert (await send_webhooks(sessions, FAST, as_of=start + timedelta(seconds=4))).retrying == 0
    await send_webhooks(sessions, FAST, as_of=start + timedelta(seconds=6))
    receiver.mode = "hang"
    hung = await send_webhooks(sessions, FAST, as_of=start + timedelta(seconds=60))
    assert hung.retrying == 4
    receiver.mode = "ok"
    recovered = await send_webhooks(sessions, FAST, as_of=start + timedelta(minutes=10))
    assert recovered.delivered == 4

    arrived = receiver.requests("/all")
    assert {uuid.UUID(one.headers["webhook-id"]) for one in arrived} == set(sent)
    assert all(signature_valid(secret, one.headers, one.body) for one in arrived)
    assert not any(signature_valid(endpoints.new_secret(), one.headers, one.body) for one in arrived)
    last = arrived[-1].document
    assert set(last) == {"type", "api_version", "id", "created_at", "data", "resource"}
    assert last["type"] == "customer.updated" and last["api_version"] == API_VERSION
    assert last["resource"]["type"] == "Customer" and last["resource"]["version"] == 1
    assert last["id"] == arrived[-1].headers["webhook-id"]

    attempts = (
        await session.execute(
            text(
                "SELECT d.next_attempt_at, array_agg(a.attempted_at ORDER BY a.attempted_at), "
                "array_agg(coalesce(a.response_status, 0) ORDER BY a.attempted_at), "
                "array_agg(coalesce(a.error, '') ORDER BY a.attempted_at), d.status, max(a.latency_ms) "
                "FROM webhook_deliveries d JOIN webhook_delivery_attempts a ON a.delivery_id = d.id "
                "WHERE d.endpoint_id = :id GROUP BY d.id"
            ),
            {"id": everything},
        )
    ).all()
    assert len(attempts) == 4
    for _, moments, statuses, errors, status, latency in attempts:
        assert status == "delivered" and statuses[0] == 500 and statuses[-1] == 200
        assert "no answer within the timeout" in errors[2] and latency >= 400
        waits = [later - earlier for earlier, later in pairwise(moments)]
        assert len(waits) == 3 and waits[0] < waits[1] < waits[2]


async def test_a_rotated_secret_signs_beside_the_new_one_during_the_overlap_only(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    start = now()
    endpoint_id = await register(sessions, receiver.url(), as_of=start)
    old = await secret_of(session, endpoint_id)
    async with sessions() as writing:
        await endpoints.rotate_secret(writing, endpoint_id, overlap=timedelta(hours=1), as_of=start)
        await writing.commit()
    new = await secret_of(session, endpoint_id)
    await emit_events(sessions, 1, as_of=start)
    await send_webhooks(sessions, FAST, as_of=start + timedelta(minutes=1))
    await emit_events(sessions, 1, as_of=start + timedelta(hours=2))
    await send_webhooks(sessions, FAST, as_of=start + timedelta(hours=2))

    during, after = receiver.requests()
    assert len(during.signatures) == 2 and all(signature.startswith("v1,") for signature in during.signatures)
    assert signature_valid(old, during.headers, during.body) and signature_valid(new, during.headers, during.body)
    assert len(after.signatures) == 1
    assert signature_valid(new, after.headers, after.body) and not signature_valid(old, after.headers, after.body)


async def test_an_endpoint_failing_too_long_is_disabled_with_an_anomaly_and_replay_catches_it_up(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    start = now()
    strict = replace(FAST, disable_after_failures=3, disable_after=timedelta(seconds=30))
    endpoint_id = await register(sessions, receiver.url(), as_of=start)
    sent = await emit_events(sessions, 2, as_of=start)
    receiver.mode = "fail"
    await send_webhooks(sessions, strict, as_of=start)  # two failures
    report = await send_webhooks(sessions, strict, as_of=start + timedelta(seconds=10))  # three, but within 30 s
    assert report.disabled == []
    report = await send_webhooks(sessions, strict, as_of=start + timedelta(minutes=5))
    assert report.disabled == [receiver.url()]

    found = (await session.execute(text("SELECT enabled, disabled_reason FROM webhook_endpoints"))).one()
    assert found[0] is False and "failed attempts in a row: HTTP 500" in found[1]
    anomaly = (
        await session.execute(
            text("SELECT severity, summary, numbers FROM anomalies WHERE kind = 'WEBHOOK_ENDPOINT_DISABLED'")
        )
    ).one()
    assert anomaly[0] == "high" and receiver.url() in anomaly[1] and anomaly[2]["endpointId"] == str(endpoint_id)

    # Disabled: nothing is sent, and new events are not queued for it.
    receiver.mode = "ok"
    tried = len(receiver.requests())
    missed = await emit_events(sessions, 1, as_of=start + timedelta(minutes=6))
    await send_webhooks(sessions, strict, as_of=start + timedelta(days=1))
    assert len(receiver.requests()) == tried

    # The endpoint takes every type, so the anomaly its own disabling opened is told to it too.
    [told_of_disabling] = (
        await session.execute(text("SELECT id FROM webhook_events WHERE type = 'anomaly.opened'"))
    ).scalars()
    async with sessions() as writing:
        await endpoints.set_enabled(writing, endpoint_id, True, as_of=start + timedelta(days=1))
        assert await endpoints.replay_since(writing, endpoint_id, since=start, as_of=start + timedelta(days=1)) == 4
        await writing.commit()
    await send_webhooks(sessions, strict, as_of=start + timedelta(days=1))
    delivered = {uuid.UUID(one.headers["webhook-id"]) for one in receiver.requests()[tried:]}
    assert delivered == {*sent, *missed, told_of_disabling}


async def test_deliveries_are_counted_by_outcome_in_the_metrics(
    app: FastAPI, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    """``GET /metrics`` counts what the sender did (the ``app`` fixture sets the metrics up)."""

    def scrape() -> Series:
        return parse(generate_latest(REGISTRY).decode())

    before = scrape()
    start = now()
    await register(sessions, receiver.url(), as_of=start)
    await emit_events(sessions, 2, as_of=start)
    await send_webhooks(sessions, FAST, as_of=start)
    receiver.mode = "fail"
    await emit_events(sessions, 1, as_of=start)
    await send_webhooks(sessions, FAST, as_of=start)

    after = scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tally_webhook_deliveries_total", outcome="delivered") == 2
    assert grew("tally_webhook_deliveries_total", outcome="retrying") == 1
    assert grew("tally_webhook_delivery_duration_seconds_count") == 3


async def test_racing_senders_send_each_event_once_and_fan_out_twice_queues_nothing_more(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    start = now()
    await register(sessions, receiver.url(), as_of=start)
    sent = await emit_events(sessions, 30, as_of=start)
    await asyncio.gather(*(send_webhooks(sessions, FAST, as_of=start, batch=5) for _ in range(3)))
    arrived = [uuid.UUID(one.headers["webhook-id"]) for one in receiver.requests()]
    assert sorted(arrived) == sorted(sent)
    await session.execute(text("UPDATE webhook_events SET fanned_out_at = NULL"))
    await session.commit()
    again = await send_webhooks(sessions, FAST, as_of=start + timedelta(minutes=1))
    assert (again.fanned_out, again.delivered) == (30, 0)
    counts = (await session.execute(text("SELECT count(*), count(DISTINCT event_id) FROM webhook_deliveries"))).one()
    assert tuple(counts) == (30, 30)
    assert json.loads(receiver.requests()[0].body)["resource"]["version"] == 1


async def test_finished_deliveries_are_pruned_after_the_retention_and_a_replay_brings_them_back(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver, settings: Settings
) -> None:
    """Delivered ones go with their attempts once their last attempt is older than the retention;
    one still being retried stays whatever its age; the events stay, so a replay queues them again."""
    start = now()
    settings = settings.model_copy(update={"webhook_retention_days": 7})
    endpoint_id = await register(sessions, receiver.url(), as_of=start)
    delivered = await emit_events(sessions, 2, as_of=start)
    await send_webhooks(sessions, FAST, as_of=start)
    receiver.mode = "fail"
    retried = await emit_events(sessions, 1, as_of=start)
    await send_webhooks(sessions, FAST, as_of=start)

    async def kept() -> tuple[int, int]:
        counts = await session.execute(
            text("SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM webhook_delivery_attempts)")
        )
        return tuple(counts.one())  # type: ignore[return-value]

    retention = timedelta(days=settings.webhook_retention_days)
    assert await prune_webhook_deliveries(sessions, settings, as_of=start + retention - timedelta(minutes=1)) == 0
    assert await kept() == (3, 3)
    assert await prune_webhook_deliveries(sessions, settings, as_of=start + retention + timedelta(minutes=1)) == 2
    assert await kept() == (1, 1), "the one still being retried stays, with its attempt"
    [left] = (await session.execute(text("SELECT event_id FROM webhook_deliveries"))).scalars()
    assert [left] == retried

    receiver.mode = "ok"
    later = start + retention + timedelta(hours=1)
    async with sessions() as writing:
        assert await endpoints.replay_since(writing, endpoint_id, since=start, as_of=later) == 3
        await writing.commit()
    await send_webhooks(sessions, FAST, as_of=later)
    assert {uuid.UUID(one.headers["webhook-id"]) for one in receiver.requests()} >= {*delivered, *retried}
