"""The replicated event log in front of ingestion (NATS JetStream): partitioning, the stream, and
publishing a batch so that a retried request adds nothing.

A batch's events are split by a stable hash of the customer into ``partitions`` subjects
(``tally.events.<partition>``); each partition's share is one message (several when it passes
the server's largest payload), in the format its ``Tally-Log-Format`` header names (see
:class:`LoggedEvent`), whose ``Nats-Msg-Id`` is a digest of its subject and its events:
a retried identical request publishes identical messages, which the stream drops inside its
duplicate window. Outside it, the event ids still count each event once (the consumer stores
through :func:`metering.service.ingest`). The edge answers only after the stream acknowledged
every message: an acknowledged message is stored on a majority of the stream's replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ledger.errors import TallyError
from metering.events import EventShape

SUBJECT_PREFIX = "tally.events"
#: The durable pull consumer every consumer process binds: they share its messages between them.
CONSUMER_NAME = "tally-ingest"
RECEIVED_AT_HEADER = "Tally-Received-At"
TRACE_ID_HEADER = "Tally-Trace-Id"
MSG_ID_HEADER = "Nats-Msg-Id"
#: The format of a message's payload. "1" (or no header: edges before format 2) is a JSON array of
#: the events' own fields as clients sent them, checked again by the consumer; "2" is
#: :class:`LoggedEvent`'s, which the consumer counts as it stands. A consumer leaves a format it
#: does not know in the log, for one that does.
FORMAT_HEADER = "Tally-Log-Format"
LEGACY_FORMAT = "1"
LOG_FORMAT = "2"
logger = logging.getLogger("tally.event_log")
#: Room a message keeps below the server's largest payload for its JSON array's brackets.
_PAYLOAD_MARGIN = 64


UNAVAILABLE_MESSAGE = (
    "the event log did not acknowledge the batch, so none of it is reported accepted; send it again "
    "(a retry counts nothing twice)"
)


class LogUnavailable(TallyError):
    """The event log did not acknowledge the batch in time: nothing may be reported accepted."""

    code = "EVENT_LOG_UNAVAILABLE"


@dataclass(frozen=True)
class LogConfig:
    """Where the log is and what it is: the servers, the stream and its partitions."""

    servers: tuple[str, ...]
    stream: str
    partitions: int
    replicas: int
    duplicate_window_seconds: float
    publish_timeout_seconds: float
    ack_wait_seconds: float

    def subject(self, partition: int) -> str:
        return f"{SUBJECT_PREFIX}.{partition}"


def partition_of(customer: str, partitions: int) -> int:
    """A customer's partition: stable across processes and restarts (not Python's salted hash), so
    one customer's events always travel in one subject, in order."""
    digest = hashlib.blake2b(customer.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


class LoggedEvent(msgspec.Struct, array_like=True, frozen=True):
    """An event as format 2 carries it, once an edge checked it: a JSON array
    ``[id, customer, type, timestamp, authorization or null, properties]`` of its fields in
    canonical form (the timestamp parsed, with its offset; the authorization a UUID), the
    properties being exactly the canonical JSON the events table stores. The consumer decodes it
    straight into these types and keeps the properties as text (``msgspec.Raw``), read only where
    a meter needs a value of them: it checks nothing again that the edge checked."""

    event_id: str
    customer: str
    event_type: str
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    authorization_id: uuid.UUID | None
    properties: msgspec.Raw


_event_encoder = msgspec.json.Encoder()
_events_decoder = msgspec.json.Decoder(list[LoggedEvent])


def logged_event(event: EventShape) -> LoggedEvent:
    return LoggedEvent(
        event.event_id,
        event.customer,
        event.event_type,
        event.occurred_at,
        event.authorization_id,
        msgspec.Raw(event.properties_json.encode()),
    )


def decode_events(payload: bytes) -> list[LoggedEvent]:
    """A format 2 payload's events; ``msgspec.DecodeError`` (or ValidationError) if it is not one."""
    return _events_decoder.decode(payload)


@dataclass(frozen=True)
class LogMessage:
    """One message of a batch: a JSON array of events (:class:`LoggedEvent`), all of one partition."""

    subject: str
    payload: bytes
    msg_id: str
    events: int


def messages_of(events: list[EventShape], config: LogConfig, *, max_payload: int) -> list[LogMessage]:
    """The messages that carry ``events`` (each already screened): one per partition's share,
    split where a share passes ``max_payload`` bytes, in format 2."""
    shares: dict[int, list[bytes]] = {}
    for event in events:
        row = _event_encoder.encode(logged_event(event))
        shares.setdefault(partition_of(event.customer, config.partitions), []).append(row)
    messages = []
    for partition, encoded in sorted(shares.items()):
        subject = config.subject(partition)
        for chunk in _chunks(encoded, max_payload - _PAYLOAD_MARGIN):
            payload = b"[" + b",".join(chunk) + b"]"
            digest = hashlib.sha256(subject.encode() + b"\n" + payload).hexdigest()
            messages.append(LogMessage(subject, payload, digest, len(chunk)))
    return messages


def message_headers(received_at: datetime, trace_id: str | None) -> dict[str, str]:
    """The headers every message of a batch carries (the digest aside): its format, the moment the
    edge received the batch and the request's trace id."""
    headers = {FORMAT_HEADER: LOG_FORMAT, RECEIVED_AT_HEADER: received_at.isoformat()}
    if trace_id:
        headers[TRACE_ID_HEADER] = trace_id
    return headers


def _chunks(encoded: list[bytes], limit: int) -> Iterator[list[bytes]]:
    """Consecutive runs of ``encoded`` whose JSON array stays within ``limit`` bytes (an event is
    at most the body limit's share of properties, far below a megabyte, so each fits alone)."""
    chunk: list[bytes] = []
    size = 0
    for text in encoded:
        if chunk and size + len(text) + 1 > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield chunk


@dataclass(frozen=True)
class Published:
    """What the stream acknowledged of a batch: events it stored now, and events of messages it
    already had (a retried request inside the duplicate window)."""

    stored: int
    already_logged: int


class EventLog:
    """A connection to the log, made on first use and kept (the client reconnects by itself);
    safe to share between the requests of one event loop."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._stream_ready = False

    async def jetstream(self) -> tuple[Client, JetStreamContext]:
        """The connection and its JetStream context, the stream and its consumer made sure of on
        first use (so a fresh cluster needs no separate setup); :class:`LogUnavailable` if the
        log cannot be reached or answer."""
        async with self._connecting:
            try:
                if self._client is None or self._client.is_closed:
                    # Once connected, the client reconnects by itself for as long as it takes; the
                    # first connection is bounded, so a request waits no longer than a publish would.
                    self._client = await asyncio.wait_for(
                        nats.connect(
                            servers=list(self.config.servers),
                            connect_timeout=min(2, self.config.publish_timeout_seconds),
                            reconnect_time_wait=0.5,
                            max_reconnect_attempts=-1,
                            allow_reconnect=True,
                            error_cb=_log_client_error,
                        ),
                        timeout=self.config.publish_timeout_seconds,
                    )
                jetstream = self._client.jetstream(timeout=self.config.publish_timeout_seconds)
                if not self._stream_ready:
                    await ensure_stream(jetstream, self.config)
                    self._stream_ready = True
            except (OSError, TimeoutError, nats.errors.Error) as error:
                logger.warning("cannot reach the event log at %s: %r", ",".join(self.config.servers), error)
                raise LogUnavailable(UNAVAILABLE_MESSAGE) from None
            return self._client, jetstream

    async def publish(self, events: list[EventShape], *, received_at: datetime, trace_id: str | None) -> Published:
        """Publish ``events`` and wait until the stream acknowledged every message; raise
        :class:`LogUnavailable` if one is not acknowledged in time (then some may be stored:
        the client's retry is dropped as a duplicate, or counted once by its event ids)."""
        if not events:
            return Published(0, 0)
        client, jetstream = await self.jetstream()
        headers = message_headers(received_at, trace_id)
        messages = messages_of(events, self.config, max_payload=client.max_payload)

        async def publish_one(message: LogMessage) -> bool:
            acknowledged = await jetstream.publish(
                message.subject,
                message.payload,
                stream=self.config.stream,
                headers={**headers, MSG_ID_HEADER: message.msg_id},
            )
            return bool(acknowledged.duplicate)

        try:
            duplicates = await asyncio.gather(*(publish_one(m) for m in messages))
        except (TimeoutError, nats.errors.Error) as error:
            logger.warning("the event log did not acknowledge a batch: %r", error)
            raise LogUnavailable(UNAVAILABLE_MESSAGE) from None
        already = sum(m.events for m, duplicate in zip(messages, duplicates, strict=True) if duplicate)
        return Published(sum(m.events for m in messages) - already, already)

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.close()


async def _log_client_error(error: Exception) -> None:
    """The client's own reports (a node refused a connection, a reconnect): one line each, rather
    than the default callback's traceback; what fails a request is answered by :class:`LogUnavailable`."""
    logger.info("event log client: %r", error)


def stream_config(config: LogConfig) -> StreamConfig:
    """The stream: a work queue (a message leaves once a consumer acknowledged it, so what it
    holds is the backlog), on disk, replicated, remembering message ids for the duplicate window."""
    return StreamConfig(
        name=config.stream,
        subjects=[f"{SUBJECT_PREFIX}.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=config.replicas,
        duplicate_window=config.duplicate_window_seconds,
    )


def consumer_config(config: LogConfig) -> ConsumerConfig:
    """The durable pull consumer all consumer processes share: a message not acknowledged within
    ``ack_wait`` (its consumer died, or its transaction failed) is delivered again."""
    return ConsumerConfig(
        durable_name=CONSUMER_NAME,
        ack_wait=config.ack_wait_seconds,
        max_ack_pending=10_000,
        filter_subject=f"{SUBJECT_PREFIX}.*",
    )


async def ensure_stream(jetstream: JetStreamContext, config: LogConfig) -> None:
    """Create the stream and its consumer, or bring them to ``config`` (idempotent)."""
    wanted = stream_config(config)
    try:
        await jetstream.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        await jetstream.add_stream(wanted)
    else:
        await jetstream.update_stream(wanted)
    await jetstream.add_consumer(config.stream, consumer_config(config))
