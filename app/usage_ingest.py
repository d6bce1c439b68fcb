"""The request boundary of usage ingestion, shared by `POST /v1/events` and `ingestUsage`:
one transaction per batch, committed before answering, retried whole on a deadlock, a
serialization failure or a dropped connection (safe: the event ids make a retried batch count
nothing twice).

A process stores and commits at most ``TALLY_INGEST_CONCURRENCY`` batches at once (2 by
default); the others are validated meanwhile and wait for their turn. Chosen when batches still
merged into shared rollup rows and waited on each other's locks (in-process: 2 at once
26,700–27,500 events/s, 4 at once 24,700/s); since batches only append, 2 and 8 at once measure
alike over HTTP on two cores (docs/performance.md), and fewer writers hold fewer connections."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from app.settings import Settings
from app.telemetry import current_trace_id
from metering.event_log import EventLog, LogConfig
from metering.events import IngestLimits, MeterRule, Rejection, screen_events
from metering.service import IngestResult, count_batch, meter_rules, read_batch

logger = logging.getLogger("tally.ingest")


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_age=timedelta(days=settings.event_max_age_days),
        max_properties_bytes=settings.event_properties_max_bytes,
        max_properties_depth=settings.event_properties_max_depth,
        quantity_max=settings.quantity_max,
        quantity_max_places=settings.quantity_max_places,
    )


def log_config(settings: Settings) -> LogConfig:
    return LogConfig(
        servers=settings.nats_servers,
        stream=settings.nats_stream,
        partitions=settings.nats_partitions,
        replicas=settings.nats_replicas,
        duplicate_window_seconds=settings.nats_duplicate_window_seconds,
        publish_timeout_seconds=settings.nats_publish_timeout_seconds,
        ack_wait_seconds=settings.nats_ack_wait_seconds,
    )


# The turns of each event loop (asyncio primitives belong to the loop they first wait on), by limit.
_writing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _turns(settings: Settings) -> asyncio.Semaphore:
    by_limit = _writing.setdefault(asyncio.get_running_loop(), {})
    return by_limit.setdefault(settings.ingest_concurrency, asyncio.Semaphore(settings.ingest_concurrency))


async def ingest_and_commit(session: AsyncSession, items: list[Any], settings: Settings) -> IngestResult:
    """Ingest and commit; a 200 after this means every accepted event is durable and counted.
    Validation runs at once; storing, counting and the commit wait for the process's turn."""
    received_at = datetime.now(UTC)

    async def validate_then_count() -> IngestResult:
        read = await read_batch(session, items, received_at=received_at, limits=ingest_limits(settings))
        async with _turns(settings):
            result = await count_batch(session, read, trace_id=current_trace_id())
            await session.commit()
        return result

    result = await in_transaction(session, validate_then_count)
    result.observe()
    return result


@dataclass(frozen=True)
class LoggedAnswer:
    """The edge's answer to a batch: ``accepted`` counts events the log acknowledged now,
    ``duplicates`` the repeats it can see (an id twice in the batch, a retried identical request
    inside the log's duplicate window); an event Tally counted from an earlier, different batch is
    accepted here and found a duplicate by the consumer (its id is the key)."""

    accepted: int
    duplicates: int
    rejected: list[Rejection]


#: How long an edge uses the meters it read before reading the catalog again (as long as a token
#: is remembered, app.auth): a meter added now is known to every edge within this many seconds.
CATALOG_CACHE_SECONDS = 5.0


class EdgeCatalog:
    """The meters an edge checks events against, read again every ``CATALOG_CACHE_SECONDS``: one
    small query now and then rather than one a request. When the database cannot be reached, the
    meters last read serve on; with none read yet, types and values are left to the counting."""

    def __init__(self) -> None:
        self._rules: dict[str, list[MeterRule]] | None = None
        self._read_at = -math.inf
        self._reading = asyncio.Lock()

    async def meters(self, session: AsyncSession) -> dict[str, list[MeterRule]] | None:
        if time.monotonic() - self._read_at < CATALOG_CACHE_SECONDS or (
            self._reading.locked() and self._rules is not None
        ):
            return self._rules
        async with self._reading:
            if time.monotonic() - self._read_at >= CATALOG_CACHE_SECONDS:
                try:
                    self._rules = await meter_rules(session)
                    self._read_at = time.monotonic()
                except (OSError, SQLAlchemyError) as error:
                    logger.warning("the edge could not read the catalog (%r): checking with the meters it has", error)
                finally:
                    await session.rollback()
        return self._rules


async def publish_and_confirm(
    event_log: EventLog, catalog: EdgeCatalog, session: AsyncSession, items: list[Any], settings: Settings
) -> LoggedAnswer:
    """Edge mode: screen the batch with the checks that need no customer (the same codes as the
    direct path), publish what passes to the log and return once the log acknowledged all of it.
    Raises :class:`metering.event_log.LogUnavailable` when it did not: nothing is then reported
    accepted. The consumer reads the customers, and quarantines unknown ones as the direct path
    does (events of an unknown type are reported rejected here, and published to be quarantined)."""
    received_at = datetime.now(UTC)
    screened = screen_events(
        items,
        meters_by_event_type=await catalog.meters(session),
        received_at=received_at,
        limits=ingest_limits(settings),
    )
    rejected_at = {rejection.index for rejection in screened.rejected}
    counted = [event for index, event in screened.passed if index not in rejected_at]
    to_quarantine = [event for index, event in screened.passed if index in rejected_at]
    trace_id = current_trace_id()
    published, _ = await asyncio.gather(
        event_log.publish(counted, received_at=received_at, trace_id=trace_id),
        event_log.publish(to_quarantine, received_at=received_at, trace_id=trace_id),
    )
    return LoggedAnswer(published.stored, published.already_logged + screened.duplicates_in_batch, screened.rejected)
