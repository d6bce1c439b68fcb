"""The event log's backlog, as JetStream reports it: per partition, the messages not yet counted
and the age of the oldest of them. Usage reads only what PostgreSQL has, so this is the part of
the metering lag that the database cannot see.

The stream is a work queue (:func:`metering.event_log.stream_config`): a message leaves it when a
consumer acknowledged it after its commit, so what the stream holds on a subject is exactly that
partition's backlog (waiting, or taken by a consumer and not yet counted).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import nats.errors
from nats.aio.client import Client

from metering.event_log import SUBJECT_PREFIX, EventLog, LogConfig, LogUnavailable

#: How long reading the backlog may take before it is reported unreachable: a page or a scrape
#: that shows it never waits longer than this for the log.
READ_TIMEOUT_SECONDS = 1.0


class LogState(enum.Enum):
    NOT_IN_USE = "NOT_IN_USE"  # no TALLY_NATS_URL: events go straight to PostgreSQL
    READ = "READ"
    UNREACHABLE = "UNREACHABLE"  # configured, but it did not answer within READ_TIMEOUT_SECONDS


@dataclass(frozen=True)
class PartitionBacklog:
    partition: int
    subject: str
    pending: int  # messages (each one edge request's share of a partition) not yet counted
    oldest_pending_at: datetime | None  # when the log stored the oldest of them

    def oldest_pending_age(self, as_of: datetime) -> timedelta | None:
        if self.oldest_pending_at is None:
            return None
        return max(as_of - self.oldest_pending_at, timedelta(0))


@dataclass(frozen=True)
class LogBacklog:
    """The log's backlog as of ``read_at``; no partitions unless ``state`` is READ."""

    state: LogState
    read_at: datetime
    partitions: tuple[PartitionBacklog, ...] = ()

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    @property
    def oldest_pending_at(self) -> datetime | None:
        return min((p.oldest_pending_at for p in self.partitions if p.oldest_pending_at), default=None)

    def oldest_pending_age(self) -> timedelta | None:
        oldest = self.oldest_pending_at
        return None if oldest is None else max(self.read_at - oldest, timedelta(0))


async def partitions_backlog(
    client: Client, config: LogConfig, *, event_log_request_seconds: float
) -> tuple[PartitionBacklog, ...]:
    """Every partition's backlog: the stream's message count per subject (one request), then the
    first message of each partition that has any (its stored time is the oldest pending's)."""
    manager = client.jsm(timeout=event_log_request_seconds)
    info = await manager.stream_info(config.stream, subjects_filter=f"{SUBJECT_PREFIX}.*")
    counts = info.state.subjects or {}
    first_sequence = info.state.first_seq

    async def oldest(subject: str) -> datetime | None:
        if not counts.get(subject):
            return None
        message = await manager.get_msg(config.stream, seq=first_sequence, subject=subject, next=True)
        return message.time

    subjects = [config.subject(partition) for partition in range(config.partitions)]
    oldest_times = await asyncio.gather(*(oldest(subject) for subject in subjects))
    return tuple(
        PartitionBacklog(partition, subject, counts.get(subject, 0), at)
        for partition, (subject, at) in enumerate(zip(subjects, oldest_times, strict=True))
    )


async def read_backlog(
    event_log: EventLog | None, *, as_of: datetime, wait_seconds: float = READ_TIMEOUT_SECONDS
) -> LogBacklog:
    """The log's backlog, never an error: NOT_IN_USE without a log, UNREACHABLE when it did not
    answer within ``wait_seconds`` (a page or a scrape shows that instead)."""
    if event_log is None:
        return LogBacklog(LogState.NOT_IN_USE, as_of)

    async def read() -> tuple[PartitionBacklog, ...]:
        client, _ = await event_log.jetstream()
        return await partitions_backlog(client, event_log.config, event_log_request_seconds=wait_seconds)

    try:
        partitions = await asyncio.wait_for(read(), timeout=wait_seconds)
    except (LogUnavailable, TimeoutError, OSError, nats.errors.Error):
        return LogBacklog(LogState.UNREACHABLE, as_of)
    return LogBacklog(LogState.READ, as_of, partitions)
