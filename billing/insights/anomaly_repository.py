"""SQL of anomalies: what each detector and the invoice accuracy check read, and the list finance
works through."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, literal, or_, text, tuple_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Anomaly, Invoice

DAILY_USAGE = text("""
SELECT r.customer_id, r.meter_id, m.key AS meter_key, m.unit, date_trunc('day', r.hour, 'UTC') AS day,
       CASE m.aggregation WHEN 'count' THEN sum(r.event_count)::numeric
                          WHEN 'sum' THEN sum(r.value_sum)
                          ELSE max(r.value_max) END AS quantity
FROM usage_rollups r JOIN meters m ON m.id = r.meter_id
WHERE m.aggregation IN ('count', 'sum', 'max') AND r.hour >= :start AND r.hour < :end
GROUP BY r.customer_id, r.meter_id, m.key, m.unit, m.aggregation, day
""")

# A period invoice with the totals of the customer's three period invoices before it (oldest
# first); void invoices count for neither.
INVOICES_WITH_PREVIOUS = text("""
SELECT i.id, i.customer_id, i.number, i.currency, i.total, i.period_start, i.period_end,
       array(SELECT p.total FROM invoices p
             WHERE p.customer_id = i.customer_id AND p.kind = 'period' AND p.status <> 'void'
               AND p.period_start < i.period_start
             ORDER BY p.period_start DESC LIMIT 3) AS previous_totals
FROM invoices i
WHERE i.kind = 'period' AND i.status <> 'void' AND i.issued_at >= :since AND i.issued_at <= :as_of
""")

LATE_USAGE_SHARES = text("""
SELECT i.id, i.customer_id, i.number, i.currency, i.subtotal, i.period_start, i.period_end,
       sum(l.amount) AS late_amount, count(*) AS late_lines
FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id AND l.kind = 'late_usage'
WHERE i.status <> 'void' AND i.issued_at >= :since AND i.issued_at <= :as_of
GROUP BY i.id
""")

PAYING_SUBSCRIPTIONS = text("""
SELECT s.customer_id, s.started_at, v.interval, v.currency, v.base_fee, p.key AS plan_key,
       (SELECT count(*) FROM plan_charges c WHERE c.plan_version_id = v.id) AS charges
FROM subscriptions s
JOIN customers cu ON cu.id = s.customer_id
JOIN plan_versions v ON v.id = s.plan_version_id
JOIN plans p ON p.id = v.plan_id
WHERE cu.status = 'ACTIVE'
  AND (v.base_fee > 0 OR EXISTS (SELECT 1 FROM plan_charges c WHERE c.plan_version_id = v.id))
""")

RANGES_WITH_EVENTS = text("""
SELECT q.customer_id, q.start
FROM unnest(CAST(:customer_ids AS uuid[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
     AS q(customer_id, start, "end")
WHERE EXISTS (SELECT 1 FROM events e
              WHERE e.customer_id = q.customer_id AND e.occurred_at >= q.start AND e.occurred_at < q."end")
""")

EDGE_COUNTS = text("""
SELECT coalesce(sum(accepted), 0) AS accepted, coalesce(sum(duplicates), 0) AS duplicates
FROM ingest_batches WHERE received_at >= :start AND received_at < :end
""")

QUARANTINE_WAITING = text("""
SELECT code, count(*) AS waiting, min(received_at) AS oldest FROM quarantined_events
WHERE replayed_at IS NULL AND received_at <= :waiting_since
GROUP BY code ORDER BY code
""")

LAGGING_WATERMARKS = text("""
SELECT customer_id, watermark, last_received_at FROM customer_watermarks
WHERE last_received_at - watermark > :threshold
  AND last_received_at > CAST(:as_of AS timestamptz) - :threshold AND last_received_at <= :as_of
""")

OPEN_DISCREPANCIES = text("""
SELECT id, kind, object_id, invoice_id, customer_id, summary, detected_at
FROM reconciliation_discrepancies WHERE status = 'open' AND detected_at <= :as_of
ORDER BY detected_at, kind, object_id
""")


async def daily_usage(session: AsyncSession, start: datetime, end: datetime) -> list[Any]:
    return list((await session.execute(DAILY_USAGE, {"start": start, "end": end})).mappings())


async def invoices_with_previous(session: AsyncSession, since: datetime, as_of: datetime) -> list[Any]:
    return list((await session.execute(INVOICES_WITH_PREVIOUS, {"since": since, "as_of": as_of})).mappings())


async def late_usage_shares(session: AsyncSession, since: datetime, as_of: datetime) -> list[Any]:
    return list((await session.execute(LATE_USAGE_SHARES, {"since": since, "as_of": as_of})).mappings())


async def paying_subscriptions(session: AsyncSession) -> list[Any]:
    return list((await session.execute(PAYING_SUBSCRIPTIONS)).mappings())


async def ranges_with_events(
    session: AsyncSession, ranges: Sequence[tuple[uuid.UUID, datetime, datetime]]
) -> set[tuple[uuid.UUID, datetime]]:
    """Which (customer, start) of the given ranges hold at least one event: one round trip."""
    if not ranges:
        return set()
    params = {
        "customer_ids": [r[0] for r in ranges],
        "starts": [r[1] for r in ranges],
        "ends": [r[2] for r in ranges],
    }
    return {(row[0], row[1]) for row in await session.execute(RANGES_WITH_EVENTS, params)}


async def edge_counts(session: AsyncSession, start: datetime, end: datetime) -> tuple[int, int]:
    """Events accepted and duplicates answered to the edge in ``[start, end)``."""
    row = (await session.execute(EDGE_COUNTS, {"start": start, "end": end})).one()
    return int(row.accepted), int(row.duplicates)


async def quarantine_waiting(session: AsyncSession, waiting_since: datetime) -> list[Any]:
    """Events received by ``waiting_since`` and not replayed yet, counted by refusal code."""
    return list((await session.execute(QUARANTINE_WAITING, {"waiting_since": waiting_since})).mappings())


async def lagging_watermarks(session: AsyncSession, threshold: timedelta, as_of: datetime) -> list[Any]:
    """Customers the edge sent events to within ``threshold`` of ``as_of`` whose counted usage
    trails that receipt by more than ``threshold``."""
    params = {"threshold": threshold, "as_of": as_of}
    return list((await session.execute(LAGGING_WATERMARKS, params)).mappings())


async def open_discrepancies(session: AsyncSession, as_of: datetime) -> list[Any]:
    return list((await session.execute(OPEN_DISCREPANCIES, {"as_of": as_of})).mappings())


def _rank() -> Any:
    """Ledger invariants first (they must never fire), then other critical ones, then the rest."""
    return case(
        (col(Anomaly.kind) == "LEDGER_INVARIANT", 0),
        (col(Anomaly.severity) == "critical", 1),
        else_=2,
    )


async def anomalies_page(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime | None,
    kind: str | None,
    severity: str | None,
    status: str | None,
    after: tuple[int, datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[Anomaly, int]]:
    """One page by rank, then newest first; each row with its rank, which the cursor carries."""
    rank = _rank()
    query = select(Anomaly, rank.label("rank")).where(col(Anomaly.detected_at) >= since)
    if until is not None:
        query = query.where(col(Anomaly.detected_at) < until)
    for column, value in ((Anomaly.kind, kind), (Anomaly.severity, severity), (Anomaly.status, status)):
        if value is not None:
            query = query.where(col(column) == value)
    if after is not None:
        after_rank, after_at, after_id = after
        query = query.where(
            or_(
                rank > after_rank,
                and_(
                    rank == after_rank,
                    tuple_(col(Anomaly.detected_at), col(Anomaly.id)) < tuple_(literal(after_at), literal(after_id)),
                ),
            )
        )
    query = query.order_by(rank, col(Anomaly.detected_at).desc(), col(Anomaly.id).desc()).limit(limit)
    return [(row[0], int(row[1])) for row in await session.execute(query)]


async def anomaly_for_update(session: AsyncSession, anomaly_id: uuid.UUID) -> Anomaly | None:
    query = select(Anomaly).where(col(Anomaly.id) == anomaly_id).with_for_update()
    return (await session.exec(query)).first()


async def random_period_invoices(session: AsyncSession, size: int) -> list[Invoice]:
    """A random sample of the issued ``period`` invoices that are not void, in number order."""
    ids = [
        row[0]
        for row in await session.execute(
            text("SELECT id FROM invoices WHERE kind = 'period' AND status <> 'void' ORDER BY random() LIMIT :size"),
            {"size": size},
        )
    ]
    found = await session.exec(select(Invoice).where(col(Invoice.id).in_(ids)).order_by(col(Invoice.number)))
    return list(found)
