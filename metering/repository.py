"""SQL of metering. The ingestion path and the usage reads talk to psycopg directly, inside the
session's transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.repository import driver_connection, may_pipeline
from metering.events import Rejection, ValidEvent, canonical_json
from metering.models import IngestBatch, QuarantinedEvent

# How a new aggregate (`excluded`) joins a stored rollup row `r`, hourly or daily alike.
MERGE_ROLLUP = """
  event_count = r.event_count + excluded.event_count,
  value_sum = CASE WHEN excluded.value_sum IS NULL THEN r.value_sum
                   ELSE coalesce(r.value_sum, 0) + excluded.value_sum END,
  value_max = greatest(r.value_max, excluded.value_max),
  latest_value = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                      THEN excluded.latest_value ELSE r.latest_value END,
  latest_event_id = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                         THEN excluded.latest_event_id ELSE r.latest_event_id END,
  latest_at = greatest(r.latest_at, excluded.latest_at)
"""

# A batch in one statement, from array parameters sent in binary (no scratch tables, no quoting,
# one round trip): the events new to Tally are stored and their measurements appended to
# `usage_pending`; the statement returns their ingest lags (received - event time, in ms), sorted.
# Nothing here updates a row another batch may hold, so concurrent batches wait on each other only
# for a shared event id.
STORE_EVENTS = """
WITH incoming AS (
  SELECT * FROM unnest(%(event_ids)b::text[], %(customer_ids)b::uuid[], %(event_types)b::text[],
                       %(occurred_at)b::timestamptz[], %(properties)b::text[], %(received_at)b::timestamptz[],
                       %(trace_ids)b::text[])
    AS e(event_id, customer_id, event_type, occurred_at, properties, received_at, trace_id)),
inserted AS (
  INSERT INTO events (event_id, customer_id, event_type, occurred_at, properties, received_at, trace_id)
  SELECT event_id, customer_id, event_type, occurred_at, properties::jsonb, received_at, trace_id
  FROM incoming ORDER BY event_id
  ON CONFLICT (event_id) DO NOTHING
  RETURNING event_id, customer_id, occurred_at, received_at),
pending AS (
  INSERT INTO usage_pending (customer_id, meter_id, occurred_at, dimensions, value, unique_value, event_id,
                             received_at)
  SELECT i.customer_id, m.meter_id, i.occurred_at, m.dimensions::jsonb, m.value, m.unique_value, i.event_id,
         i.received_at
  FROM unnest(%(measured_ids)b::text[], %(meter_ids)b::uuid[], %(dimensions)b::text[], %(values)b::numeric[],
              %(unique_values)b::text[]) AS m(event_id, meter_id, dimensions, value, unique_value)
  JOIN inserted i USING (event_id))
SELECT event_id, (extract(epoch FROM received_at - occurred_at) * 1000)::float8 AS lag_ms FROM inserted
"""

# The roller: takes what waits (at most `limit` measurements) and merges each hour's aggregate
# into the hourly rows and, summed by UTC day, into the daily ones, with the distinct values and
# the watermarks, in one statement; returns how many measurements it folded and whose they were
# (the watermark rows it wrote, one per customer: no extra scan). Deleting and merging
# in one transaction counts each measurement once, and a read sees it on one side or the other.
ROLL_UP = f"""
WITH taken AS (
  DELETE FROM usage_pending
  WHERE ctid = ANY(ARRAY(SELECT ctid FROM usage_pending LIMIT %(limit)s))
  RETURNING customer_id, meter_id, date_trunc('hour', occurred_at, 'UTC') AS hour, dimensions, value, unique_value,
            occurred_at, event_id, received_at),
hourly AS (
  SELECT customer_id, meter_id, hour, dimensions, count(*) AS event_count, sum(value) AS value_sum,
         max(value) AS value_max, (array_agg(value ORDER BY occurred_at DESC, event_id DESC))[1] AS latest_value,
         max(occurred_at) AS latest_at,
         (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1] AS latest_event_id
  FROM taken GROUP BY customer_id, meter_id, hour, dimensions),
hourly_rows AS (
  INSERT INTO usage_rollups AS r (customer_id, meter_id, hour, dimensions, event_count, value_sum, value_max,
                                  latest_value, latest_at, latest_event_id)
  SELECT * FROM hourly ORDER BY customer_id, meter_id, hour, dimensions
  ON CONFLICT (customer_id, meter_id, hour, dimensions) DO UPDATE SET {MERGE_ROLLUP}),
daily_rows AS (
  INSERT INTO usage_daily_rollups AS r (customer_id, meter_id, day, dimensions, event_count, value_sum, value_max,
                                        latest_value, latest_at, latest_event_id)
  SELECT customer_id, meter_id, date_trunc('day', hour, 'UTC') AS day, dimensions, sum(event_count), sum(value_sum),
         max(value_max), (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id DESC))[1], max(latest_at),
         (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id DESC))[1]
  FROM hourly GROUP BY customer_id, meter_id, day, dimensions
  ORDER BY customer_id, meter_id, day, dimensions
  ON CONFLICT (customer_id, meter_id, day, dimensions) DO UPDATE SET {MERGE_ROLLUP}),
seen AS (
  SELECT DISTINCT customer_id, meter_id, hour, dimensions, unique_value AS value FROM taken
  WHERE unique_value IS NOT NULL),
hourly_values AS (
  INSERT INTO usage_unique_values (customer_id, meter_id, hour, dimensions, value)
  SELECT * FROM seen ORDER BY 1, 2, 3, 4, 5
  ON CONFLICT DO NOTHING),
daily_values AS (
  INSERT INTO usage_daily_unique_values (customer_id, meter_id, day, dimensions, value)
  SELECT DISTINCT customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions, value FROM seen
  ORDER BY 1, 2, 3, 4, 5
  ON CONFLICT DO NOTHING),
watermarks AS (
  INSERT INTO customer_watermarks AS w (customer_id, watermark, last_received_at)
  SELECT customer_id, max(occurred_at), max(received_at) FROM taken
  GROUP BY customer_id ORDER BY customer_id
  ON CONFLICT (customer_id) DO UPDATE SET
    watermark = greatest(w.watermark, excluded.watermark),
    last_received_at = greatest(w.last_received_at, excluded.last_received_at)
  RETURNING customer_id)
SELECT count(*), (SELECT array_agg(customer_id) FROM watermarks) FROM taken
"""

# One roller at a time across every process: a second one would wait on the first's rows.
ROLLER_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('tally.metering.roll_up'))"


async def store_events(
    session: AsyncSession, events: Sequence[tuple[ValidEvent, datetime, str | None]]
) -> dict[str, float]:
    """Store the events new to Tally (each with when it was received and its trace) and their
    measurements, waiting to be rolled up, in the caller's transaction. An id must appear once.

    Returns the ingest lag in milliseconds of each event that was new, by id (the others were
    already counted).
    """
    if not events:
        return {}
    measured = [(e.event_id, m) for e, _, _ in events for m in e.measurements]
    params = {
        "event_ids": [e.event_id for e, _, _ in events],
        "customer_ids": [e.customer_id for e, _, _ in events],
        "event_types": [e.event_type for e, _, _ in events],
        "occurred_at": [e.occurred_at for e, _, _ in events],
        "properties": [e.properties_json for e, _, _ in events],
        "received_at": [received_at for _, received_at, _ in events],
        "trace_ids": [trace_id for _, _, trace_id in events],
        "measured_ids": [event_id for event_id, _ in measured],
        "meter_ids": [m.meter_id for _, m in measured],
        "dimensions": [m.dimensions for _, m in measured],
        "values": [m.value for _, m in measured],
        "unique_values": [m.unique_value for _, m in measured],
    }
    connection = await driver_connection(session)
    cursor = await connection.execute(STORE_EVENTS, params)
    return dict(await cursor.fetchall())


async def roll_up(session: AsyncSession, *, limit: int) -> tuple[int, frozenset[uuid.UUID]] | None:
    """Fold at most ``limit`` waiting measurements into the rollups: how many, and the customers
    whose usage they were; None when another roller holds the turn."""
    connection = await driver_connection(session)
    taken = await (await connection.execute(ROLLER_LOCK)).fetchone()
    if not taken or not taken[0]:
        return None
    folded = await (await connection.execute(ROLL_UP, {"limit": limit})).fetchone()
    if not folded:
        return 0, frozenset()
    return int(folded[0]), frozenset(folded[1] or ())


async def quarantine(session: AsyncSession, rejections: Sequence[tuple[Rejection, datetime]]) -> None:
    """Keep events refused for an unknown customer or type, each with when it was received; a
    retried one is kept once."""
    rows = [(r, received_at) for r, received_at in rejections if r.quarantined and r.event_id]
    if not rows:
        return
    await session.execute(
        text(
            "INSERT INTO quarantined_events (event_id, code, message, payload, received_at) "
            "VALUES (:event_id, :code, :message, CAST(:payload AS jsonb), :received_at) "
            "ON CONFLICT (event_id) DO NOTHING"
        ),
        [
            {
                "event_id": r.event_id,
                "code": r.code,
                "message": r.message,
                "payload": canonical_json(r.payload),
                "received_at": received_at,
            }
            for r, received_at in rows
        ],
    )


async def record_batches(session: AsyncSession, batches: Sequence[IngestBatch]) -> None:
    if not batches:
        return
    await session.execute(
        text(
            "INSERT INTO ingest_batches (received_at, accepted, duplicates, rejected, ingest_lag_p50_ms, "
            "ingest_lag_max_ms, processing_ms, trace_id) VALUES (:received_at, :accepted, :duplicates, "
            "CAST(:rejected AS jsonb), :ingest_lag_p50_ms, :ingest_lag_max_ms, :processing_ms, :trace_id)"
        ),
        [{**batch.model_dump(exclude={"id"}), "rejected": canonical_json(batch.rejected)} for batch in batches],
    )


async def waiting_in_quarantine(session: AsyncSession, *, limit: int) -> list[QuarantinedEvent]:
    """Events not yet replayed, oldest first, locked so two replays never take the same one."""
    query = (
        select(QuarantinedEvent)
        .where(col(QuarantinedEvent.replayed_at).is_(None))
        .order_by(col(QuarantinedEvent.received_at), col(QuarantinedEvent.event_id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.exec(query))


async def quarantine_page(session: AsyncSession, *, limit: int) -> list[QuarantinedEvent]:
    query = (
        select(QuarantinedEvent)
        .where(col(QuarantinedEvent.replayed_at).is_(None))
        .order_by(col(QuarantinedEvent.received_at).desc())
        .limit(limit)
    )
    return list(await session.exec(query))


WATERMARK = """
SELECT max(watermark) AS watermark FROM (
  SELECT watermark FROM customer_watermarks WHERE customer_id = %(customer_id)s
  UNION ALL
  SELECT max(occurred_at) FROM usage_pending WHERE customer_id = %(customer_id)s) AS counted
"""


async def watermark_of(session: AsyncSession, customer_id: uuid.UUID) -> datetime | None:
    """The latest event time counted for the customer, rolled up or still waiting."""
    rows = await _rows(session, WATERMARK, {"customer_id": customer_id})
    found: datetime | None = rows[0]["watermark"]
    return found


async def _rows(session: AsyncSession, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as dicts, through psycopg: usage reads serve the edge's entitlement checks and the billing run."""
    connection = await driver_connection(session)
    async with connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


def _hours_and_days(hourly: str, daily: str, columns: str, pending: str) -> str:
    """The rows of a range of whole hours: the whole UTC days inside it from the daily table, the
    hours before the first and after the last whole day from the hourly one, and the measurements
    of those hours still waiting to be rolled up (``pending``: their columns, named as ``columns``;
    chosen by their hour as the rollups are, so an hourly series ending mid-hour reads the same
    before and after a roll-up).
    One statement, so a roll-up committing meanwhile is seen whole or not at all."""
    return f"""
  SELECT hour AS at, {columns} FROM {hourly}
  WHERE customer_id = %(customer_id)s AND meter_id = ANY(%(meter_ids)s)
    AND ((hour >= %(head_start)s AND hour < %(head_end)s) OR (hour >= %(tail_start)s AND hour < %(tail_end)s))
  UNION ALL
  SELECT day AS at, {columns} FROM {daily}
  WHERE customer_id = %(customer_id)s AND meter_id = ANY(%(meter_ids)s)
    AND day >= %(days_start)s AND day < %(days_end)s
  UNION ALL
  SELECT * FROM (
    SELECT date_trunc('hour', occurred_at, 'UTC') AS at, {pending} FROM usage_pending
    WHERE customer_id = %(customer_id)s AND meter_id = ANY(%(meter_ids)s)) AS waiting
  WHERE at >= %(head_start)s AND at < %(tail_end)s"""


# Hours with usage wholly inside a range, per dimensions: rolled up or still waiting to be (the
# waiting ones by their hour, as the roller will fold them).
USAGE_HOURS = """
SELECT dimensions::text AS dimensions, count(*) AS hours FROM (
  SELECT dimensions, hour FROM usage_rollups
  WHERE customer_id = %(customer_id)s AND meter_id = %(meter_id)s
    AND hour >= %(start)s AND hour + interval '1 hour' <= %(end)s
  UNION
  SELECT dimensions, date_trunc('hour', occurred_at, 'UTC') FROM usage_pending
  WHERE customer_id = %(customer_id)s AND meter_id = %(meter_id)s
    AND date_trunc('hour', occurred_at, 'UTC') >= %(start)s
    AND date_trunc('hour', occurred_at, 'UTC') + interval '1 hour' <= %(end)s
) AS hours GROUP BY dimensions
"""


async def usage_hours(
    session: AsyncSession, customer_id: uuid.UUID, meter_id: uuid.UUID, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    params = {"customer_id": customer_id, "meter_id": meter_id, "start": start, "end": end}
    return await _rows(session, USAGE_HOURS, params)


ROLLUP_COLUMNS = "meter_id, dimensions, event_count, value_sum, value_max, latest_value, latest_at, latest_event_id"
PENDING_AS_ROLLUP = "meter_id, dimensions, 1, value, value, value, occurred_at, event_id"
UNIQUE_COLUMNS = "meter_id, dimensions, value"
PENDING_AS_UNIQUE = "meter_id, dimensions, unique_value"
ROLLUPS = _hours_and_days("usage_rollups", "usage_daily_rollups", ROLLUP_COLUMNS, PENDING_AS_ROLLUP)
SEEN_VALUES = _hours_and_days("usage_unique_values", "usage_daily_unique_values", UNIQUE_COLUMNS, PENDING_AS_UNIQUE)

ROLLUP_PARTIALS = f"""
SELECT meter_id, dimensions::text AS dimensions, sum(event_count) AS count, sum(value_sum) AS total,
       max(value_max) AS maximum
FROM ({ROLLUPS}) AS rollups
GROUP BY meter_id, dimensions
"""

# Kept apart from ROLLUP_PARTIALS: an ordered aggregate there made PostgreSQL sort every row of
# the period (3.7x slower) for a value only `latest` meters read.
ROLLUP_LATEST = f"""
SELECT DISTINCT ON (meter_id, dimensions) meter_id, dimensions::text AS dimensions, latest_value, latest_at,
       latest_event_id
FROM ({ROLLUPS}) AS rollups
ORDER BY meter_id, dimensions, latest_at DESC, latest_event_id DESC
"""

UNIQUE_VALUES = f"""
SELECT DISTINCT meter_id, dimensions::text AS dimensions, value
FROM ({SEEN_VALUES}) AS seen WHERE value IS NOT NULL
"""

RAW_EVENTS = """
SELECT event_id, event_type, occurred_at, properties::text AS properties
FROM events
WHERE customer_id = %(customer_id)s AND event_type = ANY(%(event_types)s)
  AND ((occurred_at >= %(start1)s AND occurred_at < %(end1)s) OR (occurred_at >= %(start2)s AND occurred_at < %(end2)s))
"""

SERIES = f"""
SELECT date_trunc(%(unit)s, at, 'UTC') AS bucket, sum(event_count) AS count, sum(value_sum) AS total,
       max(value_max) AS maximum,
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id DESC))[1] AS latest_value
FROM ({ROLLUPS}) AS rollups
GROUP BY bucket
"""

UNIQUE_SERIES = f"""
SELECT date_trunc(%(unit)s, at, 'UTC') AS bucket, count(DISTINCT value) AS distinct_values
FROM ({SEEN_VALUES}) AS seen WHERE value IS NOT NULL
GROUP BY bucket
"""


def _day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def whole_hours_params(
    customer_id: uuid.UUID, meter_ids: list[uuid.UUID], start: datetime, end: datetime
) -> dict[str, Any]:
    """Parameters of %(func)s:`_hours_and_days` for the whole hours ``[start, end)``."""
    days_start = _day_floor(start)
    if days_start < start:
        days_start += timedelta(days=1)
    days_end = _day_floor(end)
    if days_start >= days_end:  # no whole day inside: every hour from the hourly table
        days_start = days_end = start
        head_end = tail_start = end
    else:
        head_end, tail_start = days_start, days_end
    return {
        "customer_id": customer_id,
        "meter_ids": meter_ids,
        "head_start": start,
        "head_end": head_end,
        "tail_start": tail_start,
        "tail_end": end,
        "days_start": days_start,
        "days_end": days_end,
    }


@dataclass(frozen=True)
class Read:
    """A statement that reads rows, built apart from running it, so that a caller may send several
    in one pipeline (one network round trip): :func:`read_all`, or after an edge lookup."""

    sql: str
    params: dict[str, Any]


def rollup_partials(customer_id: uuid.UUID, meter_ids: list[uuid.UUID], start: datetime, end: datetime) -> Read:
    return Read(ROLLUP_PARTIALS, whole_hours_params(customer_id, meter_ids, start, end))


def rollup_latest(customer_id: uuid.UUID, meter_ids: list[uuid.UUID], start: datetime, end: datetime) -> Read:
    """The latest value per meter and dimensions over whole hours (for ``latest`` meters)."""
    return Read(ROLLUP_LATEST, whole_hours_params(customer_id, meter_ids, start, end))


def unique_values(customer_id: uuid.UUID, meter_ids: list[uuid.UUID], start: datetime, end: datetime) -> Read:
    return Read(UNIQUE_VALUES, whole_hours_params(customer_id, meter_ids, start, end))


def raw_events(customer_id: uuid.UUID, event_types: list[str], ranges: list[tuple[datetime, datetime]]) -> Read:
    """Raw events in one or two half-open ranges (the partial hours at both ends of a period)."""
    (start1, end1), (start2, end2) = ranges[0], ranges[-1]
    params = {
        "customer_id": customer_id,
        "event_types": event_types,
        "start1": start1,
        "end1": end1,
        "start2": start2,
        "end2": end2,
    }
    return Read(RAW_EVENTS, params)


async def read_all(session: AsyncSession, reads: Sequence[Read]) -> list[list[dict[str, Any]]]:
    """The rows of each read, in order; several are sent in one pipeline (one round trip), each
    statement still reading its own snapshot, as when sent one by one."""
    connection = await driver_connection(session)
    if not may_pipeline(session) or (len(reads) == 1 and connection.info.transaction_status != TransactionStatus.IDLE):
        return [await _rows(session, read.sql, read.params) for read in reads]
    # A transaction's first statement goes in a pipeline even alone: its BEGIN then travels with it.
    async with connection.pipeline():
        cursors = [connection.cursor(row_factory=dict_row) for _ in reads]
        for cursor, read in zip(cursors, reads, strict=True):
            await cursor.execute(read.sql, read.params)
    return [await cursor.fetchall() for cursor in cursors]


RAW_EVENTS_RECEIVED_BY = """
SELECT event_id, event_type, occurred_at, properties::text AS properties
FROM events
WHERE customer_id = %(customer_id)s AND event_type = ANY(%(event_types)s)
  AND occurred_at >= %(start)s AND occurred_at < %(end)s AND received_at <= %(received_by)s
"""


async def raw_events_received_by(
    session: AsyncSession,
    customer_id: uuid.UUID,
    event_types: list[str],
    start: datetime,
    end: datetime,
    received_by: datetime,
) -> list[Any]:
    """Every raw event of ``[start, end)`` that had arrived by ``received_by``."""
    params = {
        "customer_id": customer_id,
        "event_types": event_types,
        "start": start,
        "end": end,
        "received_by": received_by,
    }
    return await _rows(session, RAW_EVENTS_RECEIVED_BY, params)


EVENTS_IN_ORDER = """
SELECT occurred_at, event_id, properties::text AS properties
FROM events
WHERE customer_id = %(customer_id)s AND event_type = %(event_type)s
  AND occurred_at >= %(start)s AND occurred_at < %(end)s
  AND (%(received_by)s::timestamptz IS NULL OR received_at <= %(received_by)s)
ORDER BY occurred_at, event_id
"""


EVENTS_BEFORE_NEWEST_FIRST = """
SELECT occurred_at, event_id, properties::text AS properties
FROM events
WHERE customer_id = %(customer_id)s AND event_type = %(event_type)s
  AND (occurred_at, event_id) < (%(before)s, %(before_id)s)
ORDER BY occurred_at DESC, event_id DESC
LIMIT %(limit)s
"""


async def events_before_newest_first(
    session: AsyncSession,
    customer_id: uuid.UUID,
    event_type: str,
    before: tuple[datetime, str],
    *,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of the events of one type before ``before`` (a moment and an event id: the keyset),
    newest first: the reader of a level known at a moment reads pages until an event it can read
    (on ``events_by_customer_time``)."""
    params = {
        "customer_id": customer_id,
        "event_type": event_type,
        "before": before[0],
        "before_id": before[1],
        "limit": limit,
    }
    connection = await driver_connection(session)
    async with connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(EVENTS_BEFORE_NEWEST_FIRST, params)
        return await cursor.fetchall()


async def events_in_order(
    session: AsyncSession,
    customer_id: uuid.UUID,
    event_type: str,
    start: datetime,
    end: datetime,
    *,
    received_by: datetime | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The events of one type over ``[start, end)`` in the order they happened (ties by id),
    streamed row by row: a charge rated event by event reads a period's events, customer first on
    the ``events_by_customer_time`` index, without holding them all at once."""
    params = {
        "customer_id": customer_id,
        "event_type": event_type,
        "start": start,
        "end": end,
        "received_by": received_by,
    }
    connection = await driver_connection(session)
    async with connection.cursor(row_factory=dict_row) as cursor:
        async for row in cursor.stream(EVENTS_IN_ORDER, params):
            yield row


async def series(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meter_id: uuid.UUID,
    unit: str,
    start: datetime,
    end: datetime,
    *,
    unique: bool,
) -> list[Any]:
    """Hourly buckets from the hourly rollups alone; daily ones from the daily rollups where a
    day is whole inside the range."""
    params = whole_hours_params(customer_id, [meter_id], start, end)
    if unit == "hour":
        params |= {"head_end": end, "tail_start": end, "days_start": start, "days_end": start}
    params["unit"] = unit
    return await _rows(session, UNIQUE_SERIES if unique else SERIES, params)


BATCH_STATISTICS = text("""
SELECT count(*) AS batches, coalesce(sum(accepted), 0) AS accepted, coalesce(sum(duplicates), 0) AS duplicates,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ingest_lag_p50_ms) AS ingest_lag_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ingest_lag_max_ms) AS ingest_lag_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_ms) AS processing_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_ms) AS processing_p99_ms
FROM ingest_batches WHERE received_at >= :since
""")

REJECTIONS_BY_CODE = text("""
SELECT rejected.key AS code, sum(rejected.value::bigint) AS count
FROM ingest_batches, jsonb_each_text(ingest_batches.rejected) AS rejected
WHERE received_at >= :since
GROUP BY rejected.key ORDER BY count DESC
""")

OLDEST_WATERMARKS = text("""
SELECT c.external_id, w.watermark, w.last_received_at
FROM customer_watermarks w JOIN customers c ON c.id = w.customer_id
ORDER BY w.watermark ASC LIMIT :limit
""")


BATCH_HISTORY = text("""
SELECT date_bin(make_interval(mins => :minutes), received_at, :since) AS bucket,
       coalesce(sum(accepted), 0) AS accepted, coalesce(sum(duplicates), 0) AS duplicates,
       coalesce(sum((SELECT sum(value::bigint) FROM jsonb_each_text(rejected))), 0) AS rejected,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ingest_lag_p50_ms) AS ingest_lag_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ingest_lag_max_ms) AS ingest_lag_p99_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_ms) AS processing_p99_ms
FROM ingest_batches WHERE received_at >= :since AND received_at < :until
GROUP BY bucket ORDER BY bucket
""")

TAKE_SNAPSHOT = text("""
INSERT INTO metering_snapshots (taken_at, active_customers, watermark_age_p50_ms, watermark_age_max_ms, quarantined)
SELECT :as_of, count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM :as_of - watermark) * 1000)::bigint,
       max(extract(epoch FROM :as_of - watermark) * 1000)::bigint,
       (SELECT count(*) FROM quarantined_events WHERE replayed_at IS NULL)
FROM customer_watermarks WHERE last_received_at >= :as_of - interval '1 hour'
ON CONFLICT (taken_at) DO NOTHING
""")

SNAPSHOTS = text("""
SELECT taken_at, active_customers, watermark_age_p50_ms, watermark_age_max_ms, quarantined
FROM metering_snapshots WHERE taken_at >= :since AND taken_at < :until ORDER BY taken_at
""")


async def batch_history(session: AsyncSession, *, since: datetime, until: datetime, minutes: int) -> list[Any]:
    params = {"since": since, "until": until, "minutes": minutes}
    return list((await session.execute(BATCH_HISTORY, params)).mappings())


async def take_snapshot(session: AsyncSession, as_of: datetime) -> None:
    await session.execute(TAKE_SNAPSHOT, {"as_of": as_of})


async def snapshots(session: AsyncSession, *, since: datetime, until: datetime) -> list[Any]:
    return list((await session.execute(SNAPSHOTS, {"since": since, "until": until})).mappings())


async def batch_statistics(session: AsyncSession, since: datetime) -> Any:
    return (await session.execute(BATCH_STATISTICS, {"since": since})).mappings().one()


async def rejections_by_code(session: AsyncSession, since: datetime) -> list[Any]:
    return list((await session.execute(REJECTIONS_BY_CODE, {"since": since})).mappings())


async def oldest_watermarks(session: AsyncSession, limit: int) -> list[Any]:
    return list((await session.execute(OLDEST_WATERMARKS, {"limit": limit})).mappings())


async def rollup_backlog(session: AsyncSession) -> Any:
    """How many counted measurements wait for the roller, and since when the oldest has (since it
    was counted: a replayed event's first arrival may be days before)."""
    found = await session.execute(text("SELECT count(*) AS waiting, min(counted_at) AS oldest FROM usage_pending"))
    return found.mappings().one()


async def quarantine_count(session: AsyncSession) -> int:
    found = await session.execute(text("SELECT count(*) FROM quarantined_events WHERE replayed_at IS NULL"))
    return int(found.scalar_one())


EDGE_LOOKUP = """
SELECT c.id AS customer_id, c.status, s.started_at, s.plan_version_id, s.pending_plan_version_id,
       s.pending_change_at, s.cancel_at, s.paused_at, coalesce(s.has_price_overrides, false) AS has_price_overrides,
       s.billing_anchor, s.billing_anchor_day, s.trial_ends_at, s.pending_billing_anchor,
       m.id AS meter_id, m.key, m.name, m.unit, m.event_type, m.aggregation,
       m.value_property, m.group_by, m.created_at
FROM customers c
LEFT JOIN subscriptions s ON s.customer_id = c.id
LEFT JOIN meters m ON m.key = %(meter_key)s
WHERE c.external_id = %(external_id)s
"""


async def edge_lookup(
    session: AsyncSession, external_id: str, meter_key: str, also: Sequence[Read] = ()
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The customer, the meter an edge asks about and each subscription of theirs (one row each,
    one row without any; no rows for an unknown customer), and the rows of the reads ``also``
    asks for, sent after the lookup in the same round trip."""
    [rows, *others] = await read_all(
        session, [Read(EDGE_LOOKUP, {"external_id": external_id, "meter_key": meter_key}), *also]
    )
    return rows, others


# The edge's lookup, taking the turn of the (customer, meter) pair when both exist: every
# authorization of the pair waits here for the one before it to commit, and only then reads what
# is held and used (later statements, later snapshots). A transaction-scoped advisory lock, so a
# crashed caller never leaves it held; a collision of the 64-bit hash only makes two pairs share
# a turn. The lock is taken once per row, reentrantly, for a customer with several subscriptions.
EDGE_LOOKUP_LOCKED = EDGE_LOOKUP.replace(
    "FROM customers c",
    """, CASE WHEN m.id IS NOT NULL
            THEN pg_advisory_xact_lock(hashtextextended('tally.authorize:' || c.id::text || m.id::text, 0))::text
       END AS turn
FROM customers c""",
)

# What the pair's live authorizations hold, and the authorization already made with this key (if
# any); the pair named as the request names it, so that it can follow EDGE_LOOKUP_LOCKED in one
# pipeline (one network round trip), its snapshot taken once the lock is held.
HELD_AND_KEYED = """
WITH pair AS (
  SELECT c.id AS customer_id, m.id AS meter_id FROM customers c, meters m
  WHERE c.external_id = %(external_id)s AND m.key = %(meter_key)s)
SELECT (SELECT coalesce(sum(a.quantity), 0) FROM usage_authorizations a JOIN pair p USING (customer_id, meter_id)
        WHERE a.allowed AND a.settled_at IS NULL AND a.expires_at > %(as_of)s) AS held,
       k.*
FROM (SELECT 1) AS one
LEFT JOIN usage_authorizations k
  ON k.customer_id = (SELECT customer_id FROM pair) AND k.idempotency_key = %(idempotency_key)s
"""

RECORD_AUTHORIZATION = """
INSERT INTO usage_authorizations (id, customer_id, meter_id, idempotency_key, quantity, ttl_seconds, allowed, reason,
                                  used, usage_limit, remaining, reserved, created_at, expires_at)
VALUES (%(id)s, %(customer_id)s, %(meter_id)s, %(idempotency_key)s, %(quantity)s, %(ttl_seconds)s, %(allowed)s,
        %(reason)s, %(used)s, %(usage_limit)s, %(remaining)s, %(reserved)s, %(created_at)s, %(expires_at)s)
ON CONFLICT (customer_id, idempotency_key) DO NOTHING
RETURNING id
"""

KEYED_AUTHORIZATION = """
SELECT * FROM usage_authorizations WHERE customer_id = %(customer_id)s AND idempotency_key = %(idempotency_key)s
"""

# Settlement, in the ingestion's transaction: each stored event that names an authorization of its
# customer releases it, when it holds an amount of money (billing.credits.spend_authorizations) or a
# quantity of a meter that reads the event's type. The stored event is read, not the batch's copy,
# so a retried id with another payload cannot release what its counted version did not use.
SETTLE_AUTHORIZATIONS = """
UPDATE usage_authorizations a SET settled_at = %(received_at)s, settled_by_event = e.event_id
FROM unnest(%(event_ids)s::text[], %(authorization_ids)s::uuid[]) AS x(event_id, authorization_id)
JOIN events e ON e.event_id = x.event_id
WHERE a.id = x.authorization_id AND a.customer_id = e.customer_id AND a.settled_at IS NULL
  AND (a.meter_id IS NULL OR EXISTS (SELECT FROM meters m WHERE m.id = a.meter_id AND m.event_type = e.event_type))
"""

LIVE_AUTHORIZATIONS = """
SELECT a.*, m.key AS meter_key FROM usage_authorizations a JOIN meters m ON m.id = a.meter_id
WHERE a.customer_id = %(customer_id)s AND a.allowed AND a.settled_at IS NULL AND a.expires_at > %(as_of)s
ORDER BY a.expires_at, a.id LIMIT %(limit)s
"""

PRUNE_AUTHORIZATIONS = """
DELETE FROM usage_authorizations WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM usage_authorizations WHERE expires_at < %(before)s LIMIT %(limit)s))
"""


async def edge_lookup_locked(
    session: AsyncSession,
    external_id: str,
    meter_key: str,
    idempotency_key: str,
    as_of: datetime,
    also: Sequence[Read] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any], list[list[dict[str, Any]]]]:
    """:func:`edge_lookup`, holding the (customer, meter) pair's turn until the transaction ends,
    then what the pair holds and the key's earlier authorization (``id`` None when there is none),
    then the rows of the reads ``also`` asks for: one pipeline, so one network round trip; the
    statements after the first run once it holds the lock, each reading a snapshot taken then
    (what is held before what is used, as :mod:`metering.authorizations` requires)."""
    params = {"external_id": external_id, "meter_key": meter_key, "idempotency_key": idempotency_key, "as_of": as_of}
    [rows, [found], *others] = await read_all(
        session, [Read(EDGE_LOOKUP_LOCKED, params), Read(HELD_AND_KEYED, params), *also]
    )
    return rows, found, others


async def record_authorization(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert the authorization; False when another request took its key meanwhile."""
    return bool(await _rows(session, RECORD_AUTHORIZATION, row))


async def keyed_authorization(session: AsyncSession, customer_id: uuid.UUID, idempotency_key: str) -> dict[str, Any]:
    [row] = await _rows(session, KEYED_AUTHORIZATION, {"customer_id": customer_id, "idempotency_key": idempotency_key})
    return row


async def settle_authorizations(
    session: AsyncSession, references: Sequence[tuple[str, uuid.UUID]], *, received_at: datetime
) -> None:
    """Release the authorizations these (event id, authorization id) pairs name."""
    params = {
        "event_ids": [event_id for event_id, _ in references],
        "authorization_ids": [authorization_id for _, authorization_id in references],
        "received_at": received_at,
    }
    connection = await driver_connection(session)
    await connection.execute(SETTLE_AUTHORIZATIONS, params)


async def live_authorizations(
    session: AsyncSession, customer_id: uuid.UUID, as_of: datetime, *, limit: int
) -> list[dict[str, Any]]:
    return await _rows(session, LIVE_AUTHORIZATIONS, {"customer_id": customer_id, "as_of": as_of, "limit": limit})


async def prune_authorizations(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete at most ``limit`` authorizations that expired before ``before``; how many it deleted."""
    connection = await driver_connection(session)
    cursor = await connection.execute(PRUNE_AUTHORIZATIONS, {"before": before, "limit": limit})
    return cursor.rowcount
