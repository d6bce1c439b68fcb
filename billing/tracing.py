"""Spans of billing's background work, linked to the traces of what they act on: the work runs in
its own trace (a job tick), and a span link leads from it to the request that caused it (an
invoice's issuance, a webhook's delivery). Attributes name ids, amounts and outcomes, never card
or personal data."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_ID, Link, Span, SpanContext

tracer = trace.get_tracer("tally.billing")


def linked_to(trace_id: str | None, why: str) -> list[Link]:
    """A link to the trace ``trace_id`` (32 hex digits), if there is one. Tally keeps the trace id
    of what it stores, not a span id: the link names the trace, and ``tally.link`` says why."""
    if not trace_id:
        return []
    context = SpanContext(trace_id=int(trace_id, 16), span_id=INVALID_SPAN_ID, is_remote=True)
    return [Link(context, attributes={"tally.link": why})]


def trace_id_of(span: Span) -> str | None:
    """The span's trace id as Tally stores trace ids (32 hex digits); None when tracing is off."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
