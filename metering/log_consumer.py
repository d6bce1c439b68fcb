"""Counting the event log: another caller of :func:`metering.service.count_batches`.

Consumers share one durable pull consumer of the stream, so each message goes to one of them at
a time; a message is acknowledged only after the transaction that counted it committed. One that
is delivered again (its consumer died mid-batch, its transaction failed, the acknowledgement was
lost) counts nothing twice: the event id is the key, in the same transaction as the counting.

An edge checked every event it published, with the direct path's codes, and published it in
canonical form (format 2, :class:`metering.event_log.LoggedEvent`): the consumer does not check
it again. It does what only the database can tell: the customer (unknown ones are quarantined,
closed or paused subscriptions refused) and the meters of the event's type as the catalog stands
now (unknown types quarantined, values measured and bounded), as :func:`metering.events.read_events`
does. Messages of format 1 (edges before format 2) are checked again in full through
:func:`metering.service.ingest`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlmodel.ext.asyncio.session import AsyncSession

from customers import service as customers
from metering.event_log import (
    CONSUMER_NAME,
    FORMAT_HEADER,
    LEGACY_FORMAT,
    LOG_FORMAT,
    RECEIVED_AT_HEADER,
    TRACE_ID_HEADER,
    LogConfig,
    LoggedEvent,
    decode_events,
)
from metering.events import (
    Code,
    IngestLimits,
    Measurement,
    MeterRule,
    ReadBatch,
    Rejection,
    ValidEvent,
    loads_exact,
    measure,
    subscription_refusal,
    unknown_customer,
    unknown_event_type,
)
from metering.service import IngestResult, ReadIngest, count_batches, ingest, meter_rules


class UnreadableMessage(ValueError):
    """A message no consumer could ever count (not an edge's): terminated, never redelivered."""


class UnknownFormat(ValueError):
    """A message in a format this consumer does not read (a newer edge's): left in the log for a
    consumer that does, never terminated, since its events were reported accepted."""

    def __init__(self, found: str) -> None:
        super().__init__(
            f"format {found!r}, which this consumer does not read (it reads {LEGACY_FORMAT} and {LOG_FORMAT}); "
            "left in the log for a consumer that does: upgrade this one"
        )


@dataclass(frozen=True)
class LoggedBatch:
    """A message's events, with the moment the edge received them (an event's age is judged
    against it, not against when the backlog drained) and the edge request's trace id. Format 2
    gives ``events``; format 1, ``unchecked`` (the events' own fields, to be checked again)."""

    events: list[LoggedEvent]
    unchecked: list[Any]
    received_at: datetime
    trace_id: str | None


def read_message(data: bytes, headers: dict[str, str] | None) -> LoggedBatch:
    """A message as the edge published it (metering.event_log); :class:`UnknownFormat` for a
    format this consumer does not know, :class:`UnreadableMessage` for one that is not an edge's."""
    headers = headers or {}
    found = headers.get(FORMAT_HEADER, LEGACY_FORMAT)
    if found not in (LOG_FORMAT, LEGACY_FORMAT):
        raise UnknownFormat(found)
    received = headers.get(RECEIVED_AT_HEADER)
    try:
        received_at = datetime.fromisoformat(received) if received else None
        if found == LOG_FORMAT:
            events, unchecked = decode_events(data), []
        else:
            events, unchecked = [], loads_exact(data)
    except (ValueError, msgspec.DecodeError) as error:
        raise UnreadableMessage(str(error)) from None
    if received_at is None or received_at.tzinfo is None or not isinstance(unchecked, list):
        raise UnreadableMessage("not a batch of events from a Tally edge")
    return LoggedBatch(events, unchecked, received_at, headers.get(TRACE_ID_HEADER))


def held_payload(event: LoggedEvent) -> dict[str, Any]:
    """What quarantine keeps of a logged event: its own fields, as the edge checked them."""
    held: dict[str, Any] = {
        "id": event.event_id,
        "customer": event.customer,
        "type": event.event_type,
        "timestamp": event.occurred_at.isoformat(),
        "properties": loads_exact(event.properties),
    }
    if event.authorization_id is not None:
        held["authorization"] = str(event.authorization_id)
    return held


def read_logged_events(
    events: list[LoggedEvent],
    *,
    customers: dict[str, uuid.UUID],
    meters_by_event_type: dict[str, list[MeterRule]],
    limits: IngestLimits,
    refusals: dict[uuid.UUID, tuple[datetime | None, datetime | None, datetime | None]],
) -> ReadBatch:
    """The batch :func:`metering.events.read_events` reads of these events, with the same codes,
    messages and order of checks, minus the checks their edge already made. An event's properties
    are parsed only when a meter of its type reads a value or a dimension of them."""
    batch = ReadBatch()
    for index, event in enumerate(events):
        rules = meters_by_event_type.get(event.event_type)
        if not rules:
            batch.rejected.append(unknown_event_type(index, event.event_type, event.event_id, held_payload(event)))
            continue
        measurements = _measurements(index, event, rules, limits)
        if isinstance(measurements, Rejection):
            batch.rejected.append(measurements)
            continue
        customer_id = customers.get(event.customer)
        if customer_id is None:
            batch.rejected.append(unknown_customer(index, event.customer, event.event_id, held_payload(event)))
            continue
        valid = ValidEvent(
            index,
            event.event_id,
            customer_id,
            event.event_type,
            event.occurred_at,
            bytes(event.properties).decode(),
            measurements,
            event.authorization_id,
        )
        batch.add(subscription_refusal(valid, *refusals[customer_id]) if customer_id in refusals else valid)
    return batch


def _measurements(
    index: int, event: LoggedEvent, rules: list[MeterRule], limits: IngestLimits
) -> tuple[Measurement, ...] | Rejection:
    properties: dict[str, Any] = (
        loads_exact(event.properties) if any(rule.value_property or rule.group_by for rule in rules) else {}
    )
    measurements = []
    for rule in rules:
        measured = measure(properties, rule, limits)
        if isinstance(measured, str):
            return Rejection(index, Code.INVALID_VALUE, measured, event.event_id)
        measurements.append(measured)
    return tuple(measurements)


async def count_logged(
    session: AsyncSession, batches: list[LoggedBatch], *, limits: IngestLimits
) -> list[IngestResult]:
    """Count the events of ``batches`` in the caller's transaction, as the direct path would count
    a request received when their edge received it: the messages of one edge request (the shares
    of its partitions, which share its moment and trace) are counted together, as one batch, and
    all the requests' batches in one statement per table. The customers and the meters are read
    once for all of them."""
    started = time.perf_counter()
    requests: dict[tuple[datetime, str | None], list[LoggedEvent]] = {}
    unchecked: dict[tuple[datetime, str | None], list[Any]] = {}
    for batch in batches:
        if batch.events:
            requests.setdefault((batch.received_at, batch.trace_id), []).extend(batch.events)
        if batch.unchecked:
            unchecked.setdefault((batch.received_at, batch.trace_id), []).extend(batch.unchecked)
    results = []
    if requests:
        external_ids = {event.customer for events in requests.values() for event in events}
        known, refused = await customers.usage_states(session, external_ids)
        refusals = {
            customer_id: (refusal.canceled_from, refusal.paused_from, refusal.paused_until)
            for customer_id, refusal in refused.items()
        }
        rules = await meter_rules(session)
        reads = [
            (
                ReadIngest(
                    read_logged_events(
                        events, customers=known, meters_by_event_type=rules, limits=limits, refusals=refusals
                    ),
                    received_at,
                    started,
                ),
                trace_id,
            )
            for (received_at, trace_id), events in requests.items()
        ]
        results.extend(await count_batches(session, reads))
    for (received_at, trace_id), items in unchecked.items():
        results.append(await ingest(session, items, received_at=received_at, limits=limits, trace_id=trace_id))
    return results


async def subscribe(jetstream: JetStreamContext, config: LogConfig) -> JetStreamContext.PullSubscription:
    """Bind to the shared durable consumer (:class:`metering.event_log.EventLog` made sure of it)."""
    return await jetstream.pull_subscribe_bind(durable=CONSUMER_NAME, stream=config.stream)


async def take(
    subscription: JetStreamContext.PullSubscription, batch: int, *, wait_seconds: float, linger_seconds: float = 0
) -> list[Msg]:
    """Up to ``batch`` messages (a few more when messages delivered too late for an earlier take
    wait in the client: they join this one), waiting at most ``wait_seconds`` for the first; []
    when none came. Once one came, a batch not yet full waits up to ``linger_seconds`` more for
    the rest, so a consumer that keeps up with the edges still counts in large transactions (a
    transaction's fixed work, reading customers and meters and committing, is shared by more
    events)."""
    try:
        messages = await subscription.fetch(batch, timeout=wait_seconds)
    except TimeoutError:
        return []
    deadline = time.monotonic() + linger_seconds
    while len(messages) < batch and (left := deadline - time.monotonic()) > 0:
        try:
            messages.extend(await subscription.fetch(batch - len(messages), timeout=left))
        except TimeoutError:
            break
    return messages
