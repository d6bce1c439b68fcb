"""Queries over the PostgreSQL span store: recent traces, one trace, pruning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import StoredSpan
from billing.invoice_numbers import PREFIX, parse_invoice_number


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root_name: str
    started_at: datetime
    duration_us: int
    span_count: int
    has_error: bool


RECENT_TRACES = text("""
    SELECT trace_id,
           (array_agg(name ORDER BY (parent_span_id IS NULL) DESC, start_time))[1] AS root_name,
           min(start_time) AS started_at,
           (extract(epoch FROM max(start_time + duration_us * interval '1 microsecond')
                               - min(start_time)) * 1000000)::bigint AS duration_us,
           count(*) AS span_count,
           bool_or(status = 'ERROR') AS has_error
    FROM spans
    WHERE (CAST(:pattern AS text) IS NULL OR trace_id IN (
              SELECT trace_id FROM spans
              WHERE trace_id = :search OR name ILIKE :pattern OR attributes::text ILIKE :pattern
              UNION ALL SELECT trace_id FROM events WHERE event_id = :search
              UNION ALL SELECT trace_id FROM stripe_events WHERE id = :search
              UNION ALL SELECT trace_id FROM invoices WHERE number = CAST(:invoice_number AS bigint)))
    GROUP BY trace_id
    HAVING (CAST(:before_time AS timestamptz) IS NULL
            OR (min(start_time), trace_id) < (CAST(:before_time AS timestamptz), :before_id))
       AND (CAST(:everything AS boolean)
            OR (array_agg(kind ORDER BY (parent_span_id IS NULL) DESC, start_time))[1] <> 'CLIENT')
    ORDER BY started_at DESC, trace_id DESC
    LIMIT :limit
""")


async def recent_traces(
    session: AsyncSession,
    *,
    search: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
    everything: bool = False,
) -> list[TraceSummary]:
    """Newest first. ``search`` matches a trace id, a span name, any attribute value (a
    customer's external id), or the id of something that keeps its trace: a usage event (the trace
    that ingested it), a Stripe event (its delivery), an invoice number (its issuance).

    Unless ``everything``, only traces that start with a request or a piece of Tally's own work
    (a job, a billing run, a CLI command): not those whose first span is a stray client call, a
    SQL statement or an HTTP request made outside any of them."""
    term = search.strip() if search and search.strip() else None
    rows = await session.execute(
        RECENT_TRACES,
        {
            "search": term,
            "invoice_number": parse_invoice_number(term) if term and term.upper().startswith(PREFIX) else None,
            "pattern": f"%{term}%" if term else None,
            "before_time": before[0] if before else None,
            "before_id": before[1] if before else "",
            "limit": limit,
            "everything": everything,
        },
    )
    return [TraceSummary(**row._mapping) for row in rows]


async def spans_of(session: AsyncSession, trace_id: str) -> list[StoredSpan]:
    query = select(StoredSpan).where(StoredSpan.trace_id == trace_id).order_by(StoredSpan.start_time)  # type: ignore[arg-type]
    return list((await session.exec(query)).scalars())  # type: ignore[call-overload]


async def prune_spans(session: AsyncSession, *, older_than: datetime) -> int:
    result = await session.execute(text("DELETE FROM spans WHERE start_time < :cutoff"), {"cutoff": older_than})
    return int(result.rowcount)  # type: ignore[attr-defined]
