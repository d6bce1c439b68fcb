"""GraphQL of the span store, for the console's Traces pages."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app import trace_store
from app.api.common import Connection, connection, decode_time_cursor, page_size, time_cursor
from app.api.permissions import requires
from app.auth import Capability
from app.models import StoredSpan


@strawberry.type
class SpanLink:
    trace_id: str
    span_id: str
    attributes: JSON


@strawberry.type
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    status: str
    start_time: datetime
    duration_us: int = strawberry.field(description="Duration in microseconds.")
    attributes: JSON
    events: JSON
    links: list[SpanLink]

    @classmethod
    def from_model(cls, span: StoredSpan) -> Span:
        return cls(
            trace_id=span.trace_id,
            span_id=span.span_id,
            parent_span_id=span.parent_span_id,
            name=span.name,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            duration_us=span.duration_us,
            attributes=cast(JSON, span.attributes),
            events=cast(JSON, span.events),
            links=[
                SpanLink(trace_id=lk["trace_id"], span_id=lk["span_id"], attributes=lk.get("attributes", {}))
                for lk in span.links
            ],
        )


@strawberry.type
class Trace:
    trace_id: str
    root_name: str
    started_at: datetime
    duration_us: int
    span_count: int
    has_error: bool

    @classmethod
    def from_summary(cls, summary: trace_store.TraceSummary) -> Trace:
        return cls(
            trace_id=summary.trace_id,
            root_name=summary.root_name,
            started_at=summary.started_at,
            duration_us=summary.duration_us,
            span_count=summary.span_count,
            has_error=summary.has_error,
        )


@strawberry.enum(description="Which traces a list shows.")
class TraceScope(Enum):
    REQUESTS_AND_JOBS = strawberry.enum_value(
        "REQUESTS_AND_JOBS",
        description="Traces that start with a request or a piece of Tally's own work (a job that did "
        "something, a billing run, a CLI command).",
    )
    ALL = strawberry.enum_value(
        "ALL", description="Also traces that start with a stray client call (a SQL statement outside any of them)."
    )


@strawberry.type
class TracesQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_TRACES)],
        description="Recent traces in the span store, newest first; search by trace id, span name, "
        "attribute value (a customer's external id), usage event id, Stripe event id or invoice number. "
        "By default only traces of requests and of jobs (scope REQUESTS_AND_JOBS).",
    )
    async def traces(
        self,
        info: Info,
        search: str | None = None,
        first: int | None = None,
        after: str | None = None,
        scope: TraceScope = TraceScope.REQUESTS_AND_JOBS,
    ) -> Connection[Trace]:
        limit = page_size(first, default=50, maximum=info.context.settings.page_size_max)
        before = decode_time_cursor(after)
        rows = await trace_store.recent_traces(
            info.context.session,
            search=search,
            before=before,
            limit=limit + 1,
            everything=scope is TraceScope.ALL,
        )
        return connection(
            rows,
            limit,
            Trace.from_summary,
            lambda row: time_cursor(row.started_at, row.trace_id),
        )

    @strawberry.field(
        permission_classes=[requires(Capability.READ_TRACES)],
        description="The spans of one trace, in start order.",
    )
    async def trace_spans(self, info: Info, trace_id: str) -> list[Span]:
        return [Span.from_model(s) for s in await trace_store.spans_of(info.context.session, trace_id.strip().lower())]
