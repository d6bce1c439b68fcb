"""What the rest of Tally calls about usage: ingest a batch, replay the quarantine, read usage,
series and entitlements."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import metrics, trace
from sqlmodel.ext.asyncio.session import AsyncSession

from customers import service as customers
from metering import authorizations, repository
from metering.errors import ReplayLimitOutOfRange, TooManyBuckets
from metering.events import (
    IngestLimits,
    MeterRule,
    ReadBatch,
    Rejection,
    ValidEvent,
    canonical_json,
    loads_exact,
    read_events,
    text_problem,
)
from metering.models import IngestBatch, QuarantinedEvent
from pricing import repository as catalog

_meter = metrics.get_meter("tally.metering")
# Buckets for what these lags are: an edge's delay runs from milliseconds to the days a late event
# may take; counting a batch, from a millisecond to seconds.
INGEST_LAG = _meter.create_histogram(
    "tally.metering.ingest_lag",
    unit="ms",
    description="received - event time",
    explicit_bucket_boundaries_advisory=[100, 1000, 5000, 30_000, 60_000, 300_000, 3_600_000, 86_400_000, 604_800_000],
)
PROCESSING_LAG = _meter.create_histogram(
    "tally.metering.processing_lag",
    unit="ms",
    description="counted - received",
    explicit_bucket_boundaries_advisory=[1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000],
)
EVENTS = _meter.create_counter("tally.metering.events", description="events by outcome")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    lags_ms: list[float]  # ingest lag of each accepted event, sorted
    processing_ms: int

    def observe(self) -> None:
        """Record the batch's metrics and span attributes: once it is committed, by the caller
        (1,000 histogram records are a few milliseconds that need not hold the batch's row locks)."""
        rejected = Counter(r.code for r in self.rejected)
        span = trace.get_current_span()
        span.set_attributes(
            {
                "tally.events.accepted": self.accepted,
                "tally.events.duplicates": self.duplicates,
                "tally.events.rejected": len(self.rejected),
                "tally.metering.processing_lag_ms": self.processing_ms,
            }
        )
        lags = self.lags_ms
        if lags:
            span.set_attribute("tally.metering.ingest_lag_p50_ms", lags[len(lags) // 2])
            span.set_attribute("tally.metering.ingest_lag_max_ms", lags[-1])
        for lag in lags:
            INGEST_LAG.record(lag)
        PROCESSING_LAG.record(self.processing_ms)
        EVENTS.add(self.accepted, {"outcome": "accepted"})
        EVENTS.add(self.duplicates, {"outcome": "duplicate"})
        for code, count in rejected.items():
            EVENTS.add(count, {"outcome": "rejected", "code": code})


async def meter_rules(session: AsyncSession) -> dict[str, list[MeterRule]]:
    rules: dict[str, list[MeterRule]] = {}
    for meter in (await catalog.meters_by_key(session)).values():
        rules.setdefault(meter.event_type, []).append(
            MeterRule(meter.id, meter.aggregation, meter.value_property, tuple(meter.group_by), meter.allow_negative)
        )
    return rules


@dataclass(frozen=True)
class ReadIngest:
    """A batch validated against the catalog and the customers, not yet stored."""

    batch: ReadBatch
    received_at: datetime
    started: float  # perf_counter when ingestion began, for the processing lag


async def read_batch(
    session: AsyncSession, items: list[Any], *, received_at: datetime, limits: IngestLimits
) -> ReadIngest:
    """Validate a batch: the first half of :func:`ingest`, which takes no lock."""
    started = time.perf_counter()
    external_ids = {
        i["customer"]
        for i in items
        if isinstance(i, dict) and isinstance(i.get("customer"), str) and not text_problem(i["customer"])
    }
    known, refusals = await customers.usage_states(session, external_ids)
    batch = read_events(
        items,
        customers=known,
        refusals={
            customer_id: (refusal.canceled_from, refusal.paused_from, refusal.paused_until)
            for customer_id, refusal in refusals.items()
        },
        meters_by_event_type=await meter_rules(session),
        received_at=received_at,
        limits=limits,
    )
    return ReadIngest(batch, received_at, started)


async def ingest(
    session: AsyncSession,
    items: list[Any],
    *,
    received_at: datetime,
    limits: IngestLimits,
    trace_id: str | None,
) -> IngestResult:
    """Count every valid event new to Tally exactly once, in the caller's transaction.

    The event id is the key, enforced by the events table's primary key in the same
    transaction as the measurements: when the caller commits, the batch is durable and counted
    (usage reads what waits to be rolled up); when it fails, nothing of it is. Unknown customers
    and event types go to quarantine.
    """
    read = await read_batch(session, items, received_at=received_at, limits=limits)
    return await count_batch(session, read, trace_id=trace_id)


async def count_batch(session: AsyncSession, read: ReadIngest, *, trace_id: str | None) -> IngestResult:
    """Store a validated batch and count its new events (the second half of :func:`ingest`): the
    part that writes, holding its event ids' locks until the caller commits."""
    (result,) = await count_batches(session, [(read, trace_id)])
    return result


async def count_batches(session: AsyncSession, reads: list[tuple[ReadIngest, str | None]]) -> list[IngestResult]:
    """:func:`count_batch` for several batches received apart (each with its own moment and
    trace, as the event log's consumer counts the edge requests of one transaction) in one
    statement per table rather than one per batch. An event id in two of them counts in the
    first; the later batch counts it as a duplicate, as it would across transactions."""
    counted_ids: set[str] = set()
    firsts: list[list[ValidEvent]] = []  # each batch's events that no batch before it holds
    for read, _ in reads:
        firsts.append([event for event in read.batch.valid if event.event_id not in counted_ids])
        counted_ids.update(event.event_id for event in firsts[-1])
    lag_by_id = await repository.store_events(
        session,
        [
            (event, read.received_at, trace_id)
            for (read, trace_id), first in zip(reads, firsts, strict=True)
            for event in first
        ],
    )
    for read, _ in reads:
        references = [(e.event_id, e.authorization_id) for e in read.batch.valid if e.authorization_id is not None]
        await authorizations.settle(session, references, received_at=read.received_at)
    await repository.quarantine(session, [(r, read.received_at) for read, _ in reads for r in read.batch.rejected])
    results, batches = [], []
    for (read, trace_id), first in zip(reads, firsts, strict=True):
        batch = read.batch
        lags = sorted(lag_by_id[e.event_id] for e in first if e.event_id in lag_by_id)
        accepted = len(lags)
        duplicates = len(batch.valid) - accepted + batch.duplicates_in_batch
        # Processing lag: from the batch reaching ingestion to its events being counted (a
        # monotonic clock, so replays of old batches measure their own work, not their age).
        processing_ms = int((time.perf_counter() - read.started) * 1000)
        results.append(IngestResult(accepted, duplicates, batch.rejected, lags, processing_ms))
        batches.append(
            IngestBatch(
                received_at=read.received_at,
                accepted=accepted,
                duplicates=duplicates,
                rejected=dict(Counter(r.code for r in batch.rejected)),
                ingest_lag_p50_ms=int(lags[len(lags) // 2]) if lags else None,
                ingest_lag_max_ms=int(lags[-1]) if lags else None,
                processing_ms=processing_ms,
                trace_id=trace_id,
            )
        )
    await repository.record_batches(session, batches)
    return results


ROLL_UP_LIMIT = 100_000
#: The most buckets one metering history answers (a chart's width).
MAX_HISTORY_BUCKETS = 1000


@dataclass(frozen=True)
class RolledUp:
    """One go of the roller: how many measurements it folded, and whose usage they were (the
    customers whose alerts and entitlements are worth looking at again once it commits)."""

    folded: int
    customer_ids: frozenset[uuid.UUID]


async def roll_up_touching(session: AsyncSession, *, limit: int = ROLL_UP_LIMIT) -> RolledUp | None:
    """Fold up to ``limit`` counted measurements into the hourly and daily rollups and the
    watermarks, in the caller's transaction; None when another roller has the turn. Usage is the
    same before and after: reads add what waits."""
    found = await repository.roll_up(session, limit=limit)
    return None if found is None else RolledUp(*found)


async def roll_up(session: AsyncSession, *, limit: int = ROLL_UP_LIMIT) -> int | None:
    """:func:`roll_up_touching`'s count alone."""
    rolled = await roll_up_touching(session, limit=limit)
    return None if rolled is None else rolled.folded


#: The most events one replay takes, in one transaction: every replayed event is a row updated.
REPLAY_LIMIT_MAX = 100_000


@dataclass(frozen=True)
class ReplayReport:
    accepted: int
    duplicates: int
    still_waiting: int
    rejected: int


async def replay_quarantine(session: AsyncSession, *, limits: IngestLimits, batch_size: int = 1000) -> ReplayReport:
    """Send quarantined events through ingestion again, each judged as of when it first arrived.

    Events whose customer or meter still does not exist stay in quarantine untouched: they were
    counted as rejected when they arrived, and a replay that finds them still waiting records
    nothing (no ingest batch, no metric), so the rejection figures do not grow with each replay.
    The others are counted like any batch and marked replayed with their outcome. A
    ``batch_size`` outside 1 to :data:`REPLAY_LIMIT_MAX` is refused before anything is read.
    """
    if not 1 <= batch_size <= REPLAY_LIMIT_MAX:
        raise ReplayLimitOutOfRange(REPLAY_LIMIT_MAX)
    accepted = duplicates = waiting = rejected = 0
    for held in await repository.waiting_in_quarantine(session, limit=batch_size):
        payload = loads_exact(canonical_json(held.payload))
        read = await read_batch(session, [payload], received_at=held.received_at, limits=limits)
        if read.batch.rejected and read.batch.rejected[0].quarantined:
            waiting += 1
            continue
        result = await count_batch(session, read, trace_id=None)
        result.observe()
        held.replayed_at = datetime.now(UTC)
        if result.accepted:
            held.replay_outcome, accepted = "ACCEPTED", accepted + 1
        elif result.duplicates:
            held.replay_outcome, duplicates = "DUPLICATE", duplicates + 1
        else:
            held.replay_outcome, rejected = result.rejected[0].code, rejected + 1
        session.add(held)
    await session.flush()
    return ReplayReport(accepted, duplicates, waiting, rejected)


@dataclass(frozen=True)
class MeteringOverview:
    since: datetime
    until: datetime
    batches: int
    accepted: int
    duplicates: int
    rejected_by_code: dict[str, int]
    ingest_lag_p50_ms: float | None
    ingest_lag_p99_ms: float | None
    processing_p50_ms: float | None
    processing_p99_ms: float | None
    oldest_watermarks: list[tuple[str, datetime, datetime]]
    quarantined: int
    waiting_to_roll_up: int  # counted measurements the roller has not folded yet (usage reads them)
    waiting_since: datetime | None  # when the oldest of them was received

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / max((self.until - self.since).total_seconds(), 1)


async def overview(session: AsyncSession, *, since: datetime, until: datetime) -> MeteringOverview:
    """How ingestion went since ``since``: volumes, rejections by code, lags, and the customers
    whose usage is least complete."""
    stats = await repository.batch_statistics(session, since)
    backlog = await repository.rollup_backlog(session)
    return MeteringOverview(
        since=since,
        until=until,
        batches=int(stats["batches"]),
        accepted=int(stats["accepted"]),
        duplicates=int(stats["duplicates"]),
        rejected_by_code={
            row["code"]: int(row["count"]) for row in await repository.rejections_by_code(session, since)
        },
        ingest_lag_p50_ms=stats["ingest_lag_p50_ms"],
        ingest_lag_p99_ms=stats["ingest_lag_p99_ms"],
        processing_p50_ms=stats["processing_p50_ms"],
        processing_p99_ms=stats["processing_p99_ms"],
        oldest_watermarks=[
            (row["external_id"], row["watermark"], row["last_received_at"])
            for row in await repository.oldest_watermarks(session, 10)
        ],
        quarantined=await repository.quarantine_count(session),
        waiting_to_roll_up=int(backlog["waiting"]),
        waiting_since=backlog["oldest"],
    )


@dataclass(frozen=True)
class HistoryPoint:
    """Ingestion in one bucket of time: volumes from its batches, lags as percentiles over them."""

    start: datetime
    accepted: int
    duplicates: int
    rejected: int
    ingest_lag_p50_ms: float | None
    ingest_lag_p99_ms: float | None
    processing_p99_ms: float | None


@dataclass(frozen=True)
class WatermarkPoint:
    taken_at: datetime
    active_customers: int
    watermark_age_p50_ms: int | None
    watermark_age_max_ms: int | None
    quarantined: int


async def history(
    session: AsyncSession, *, since: datetime, until: datetime, bucket: timedelta
) -> tuple[list[HistoryPoint], list[WatermarkPoint]]:
    """Ingestion per bucket since ``since`` (empty buckets included, as zero volumes and no lag),
    and the watermark snapshots taken meanwhile; buckets of at least a minute, at most
    :data:`MAX_HISTORY_BUCKETS` of them."""
    if bucket < timedelta(minutes=1) or (until - since) / bucket > MAX_HISTORY_BUCKETS:
        raise TooManyBuckets("between 1 and a size that gives at most 1,000 buckets", field="bucketMinutes")
    minutes = max(int(bucket.total_seconds() // 60), 1)
    rows = {
        row["bucket"]: row for row in await repository.batch_history(session, since=since, until=until, minutes=minutes)
    }
    points, start = [], since
    while start < until:
        row = rows.get(start)
        points.append(
            HistoryPoint(
                start=start,
                accepted=int(row["accepted"]) if row else 0,
                duplicates=int(row["duplicates"]) if row else 0,
                rejected=int(row["rejected"]) if row else 0,
                ingest_lag_p50_ms=row["ingest_lag_p50_ms"] if row else None,
                ingest_lag_p99_ms=row["ingest_lag_p99_ms"] if row else None,
                processing_p99_ms=row["processing_p99_ms"] if row else None,
            )
        )
        start += timedelta(minutes=minutes)
    watermarks = [
        WatermarkPoint(
            taken_at=row["taken_at"],
            active_customers=int(row["active_customers"]),
            watermark_age_p50_ms=row["watermark_age_p50_ms"],
            watermark_age_max_ms=row["watermark_age_max_ms"],
            quarantined=int(row["quarantined"]),
        )
        for row in await repository.snapshots(session, since=since, until=until)
    ]
    return points, watermarks


async def take_snapshot(session: AsyncSession, *, as_of: datetime) -> None:
    """Record how complete usage is now (the console charts it over time)."""
    await repository.take_snapshot(session, as_of)


async def quarantined(session: AsyncSession, *, limit: int) -> list[QuarantinedEvent]:
    return await repository.quarantine_page(session, limit=limit)
