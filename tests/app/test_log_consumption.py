"""The consumer loop's answer to each message, on a real (single-node) JetStream server: a
message in a format it does not read stays in the log, while the rest of its batch is counted."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.log_consumption import count_and_acknowledge
from app.nats_cluster import nats_server_binary, wait_until_ready
from app.settings import Settings
from app.usage_ingest import ingest_limits
from customers.service import NewCustomer, create_customer
from metering.event_log import FORMAT_HEADER, MSG_ID_HEADER, EventLog, LogConfig, message_headers, messages_of
from metering.events import screen_events
from metering.log_consumer import subscribe, take


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(nats_server_binary()), "--jetstream", "--store_dir", str(tmp_path / "js"), "--addr", "127.0.0.1"]
    server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_a_message_in_an_unknown_format_stays_in_the_log_while_its_batch_is_counted(
    nats_url: str,
    sessions: async_sessionmaker[AsyncSession],
    catalog: None,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = LogConfig((nats_url,), "TALLY_TEST", 8, 1, 120, 5, 30)
    await wait_until_ready(config)
    received_at = datetime.now(UTC)
    async with sessions() as session:
        new = NewCustomer("org_a", "A", "USD", plan_key="pro", started_at=received_at - timedelta(days=3))
        await create_customer(session, new, as_of=received_at)
        await session.commit()
    event = {"id": "e1", "customer": "org_a", "type": "request.completed", "timestamp": received_at.isoformat()}
    limits = ingest_limits(settings)
    screened = screen_events([event], meters_by_event_type=None, received_at=received_at, limits=limits)
    [message] = messages_of([shape for _, shape in screened.passed], config, max_payload=1024 * 1024)
    headers = message_headers(received_at, None)
    event_log = EventLog(config)
    try:
        _, jetstream = await event_log.jetstream()
        for format_name, msg_id in (("2", message.msg_id), ("3", "from-a-newer-edge")):
            await jetstream.publish(
                message.subject,
                message.payload,
                stream=config.stream,
                headers={**headers, FORMAT_HEADER: format_name, MSG_ID_HEADER: msg_id},
            )
        subscription = await subscribe(jetstream, config)
        taken = await take(subscription, 10, wait_seconds=5)
        assert len(taken) == 2
        with caplog.at_level(logging.ERROR, logger="tally.consume"):
            assert await count_and_acknowledge(sessions, taken, limits) == 1
        assert "is in format '3', which this consumer does not read" in caplog.text
        assert "upgrade this one" in caplog.text

        async def left_in_stream() -> int:
            for _ in range(50):
                left = int((await jetstream.stream_info(config.stream)).state.messages)
                if left <= 1:
                    return left
                await asyncio.sleep(0.1)
            return left

        assert await left_in_stream() == 1, "the counted message left the log, the unread one stayed"
        assert await take(subscription, 10, wait_seconds=1) == [], "offered again only after a delay"
    finally:
        await event_log.close()


async def test_a_consumer_that_keeps_up_lingers_to_fill_its_batch_and_no_longer(nats_url: str) -> None:
    """Edges publish a request's messages one after another: a consumer that took the first waits
    a moment for the rest, so it counts them in one transaction; a full batch is not kept waiting."""
    config = LogConfig((nats_url,), "TALLY_TEST", 8, 1, 120, 5, 30)
    await wait_until_ready(config)
    event_log = EventLog(config)
    try:
        _, jetstream = await event_log.jetstream()
        published = 0

        async def publish(count: int, *, after_seconds: float = 0) -> None:
            nonlocal published
            await asyncio.sleep(after_seconds)
            for _ in range(count):
                published += 1
                await jetstream.publish(
                    "tally.events.0", b"[]", stream=config.stream, headers={MSG_ID_HEADER: f"m{published}"}
                )

        subscription = await subscribe(jetstream, config)
        await publish(1)
        later = asyncio.create_task(publish(2, after_seconds=0.3))
        assert len(await take(subscription, 10, wait_seconds=5)) == 1, "without a linger: what was there"
        await later
        for message in await take(subscription, 10, wait_seconds=5):
            await message.ack()

        await publish(1)
        later = asyncio.create_task(publish(2, after_seconds=0.3))
        lingered = await take(subscription, 10, wait_seconds=5, linger_seconds=2)
        await later
        assert len(lingered) == 3, "the messages published while it lingered joined the batch"
        for message in lingered:
            await message.ack()

        await publish(3)
        full = await asyncio.wait_for(take(subscription, 3, wait_seconds=5, linger_seconds=60), timeout=10)
        assert len(full) == 3, "a full batch is counted at once, not after the linger"
    finally:
        await event_log.close()
