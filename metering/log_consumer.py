"""Counting the event log: another caller of :func:`metering.service.ingest`.

Consumers share one durable pull consumer of the stream, so each message goes to one of them at
a time; a message is acknowledged only after the transaction that counted it committed. One that
is delivered again (its consumer died mid-batch, its transaction failed, the acknowledgement was
lost) counts nothing twice: the event id is the key, in the same transaction as the counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlmodel.ext.asyncio.session import AsyncSession

from metering.event_log import CONSUMER_NAME, RECEIVED_AT_HEADER, TRACE_ID_HEADER, LogConfig
from metering.events import IngestLimits, loads_exact
from metering.service import IngestResult, ingest


class UnreadableMessage(ValueError):
    """A message no consumer could ever count (not an edge's): terminated, never redelivered."""


@dataclass(frozen=True)
class LoggedBatch:
    """A message's events, with the moment the edge received them (an event's age is judged
    against it, not against when the backlog drained) and the edge request's trace id."""

    items: list[Any]
    received_at: datetime
    trace_id: str | None


def read_message(data: bytes, headers: dict[str, str] | None) -> LoggedBatch:
    """A message as the edge published it (metering.event_log), or :class:`UnreadableMessage`."""
    received = (headers or {}).get(RECEIVED_AT_HEADER)
    try:
        received_at = datetime.fromisoformat(received) if received else None
        items = loads_exact(data)
    except (ValueError, msgspec.DecodeError) as error:
        raise UnreadableMessage(str(error)) from None
    if received_at is None or received_at.tzinfo is None or not isinstance(items, list):
        raise UnreadableMessage("not a batch of events from a Tally edge")
    return LoggedBatch(items, received_at, (headers or {}).get(TRACE_ID_HEADER))


async def count_logged(
    session: AsyncSession, batches: list[LoggedBatch], *, limits: IngestLimits
) -> list[IngestResult]:
    """Count the events of ``batches`` in the caller's transaction, as the direct path would count
    a request received when their edge received it: the messages of one edge request (the shares
    of its partitions, which share its moment and trace) are counted together, in one statement."""
    requests: dict[tuple[datetime, str | None], list[Any]] = {}
    for batch in batches:
        requests.setdefault((batch.received_at, batch.trace_id), []).extend(batch.items)
    return [
        await ingest(session, items, received_at=received_at, limits=limits, trace_id=trace_id)
        for (received_at, trace_id), items in requests.items()
    ]


async def subscribe(jetstream: JetStreamContext, config: LogConfig) -> JetStreamContext.PullSubscription:
    """Bind to the shared durable consumer (:class:`metering.event_log.EventLog` made sure of it)."""
    return await jetstream.pull_subscribe_bind(durable=CONSUMER_NAME, stream=config.stream)


async def take(subscription: JetStreamContext.PullSubscription, batch: int, *, wait_seconds: float) -> list[Msg]:
    """Up to ``batch`` messages, waiting at most ``wait_seconds`` for the first; [] when none came."""
    try:
        return await subscription.fetch(batch, timeout=wait_seconds)
    except TimeoutError:
        return []
