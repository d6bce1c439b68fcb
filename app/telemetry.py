"""OpenTelemetry, set up once per process: FastAPI, Strawberry and psycopg are instrumented.

Spans go by OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; otherwise, in batches, to the
``spans`` table, which the console's Traces page reads and a job prunes to the retention. Either
way they are redacted first (``app.span_redaction``), and a request joins the caller's trace only
when the caller is authenticated (``app.trace_trust``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from app.settings import Settings
from app.span_redaction import RedactingSpanExporter
from app.trace_trust import link_untrusted_parent

logger = logging.getLogger(__name__)

INSERT_SPAN = """
    INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, status, start_time,
                       duration_us, attributes, events, links)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT DO NOTHING
"""


def _attributes(attributes: Any) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in (attributes or {}).items()}


def _timestamp(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=UTC)


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    context = span.get_span_context()
    assert context is not None
    start = span.start_time or 0
    end = span.end_time or start
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent else None,
        span.name,
        span.kind.name,
        span.status.status_code.name,
        _timestamp(start),
        (end - start) // 1000,
        json.dumps(_attributes(span.attributes), default=str),
        json.dumps(
            [
                {
                    "name": e.name,
                    "at": _timestamp(e.timestamp).isoformat(),
                    "attributes": _attributes(e.attributes),
                }
                for e in span.events
            ],
            default=str,
        ),
        json.dumps(
            [
                {
                    "trace_id": format(link.context.trace_id, "032x"),
                    "span_id": format(link.context.span_id, "016x"),
                    "attributes": _attributes(link.attributes),
                }
                for link in span.links
            ],
            default=str,
        ),
    )


class PostgresSpanExporter(SpanExporter):
    """Writes finished spans to the ``spans`` table, from the batch processor's thread.

    Its own SQL is not traced (that would feed itself). A failure drops the batch with a
    warning rather than blocking the application: traces are diagnostics, not records.
    """

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._connection: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [span_row(span) for span in spans]
        with self._lock, suppress_instrumentation():
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = psycopg.connect(self.conninfo, autocommit=True)
                with self._connection.cursor() as cursor:
                    cursor.executemany(INSERT_SPAN, rows)
            except psycopg.Error as error:
                logger.warning("dropped %d spans: %s", len(rows), error)
                self._close()
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def shutdown(self) -> None:
        with self._lock:
            self._close()


JOB_ATTRIBUTE = "tally.job"  # on the root span of a background job: the job's name
IDLE_ATTRIBUTE = "tally.job.idle"  # set true on it when the job found nothing to do
HELD_SPANS_MAX = 2_000  # a job trace this large clearly did something: stop holding it


class IdleJobFilter(SpanProcessor):
    """Keeps background jobs that found nothing to do out of the span store.

    A job's spans (its SQL above all) end before its root span knows whether the job did
    anything, so the spans of a trace whose root carries ``tally.job`` are held back until that
    root ends: then they all go on to ``downstream``, or are all dropped when the root says
    ``tally.job.idle``. Every other span goes straight through. Without this, the roller polling
    every few seconds fills the Traces page with its own empty queries.
    """

    def __init__(self, downstream: SpanProcessor, *, held_max: int = HELD_SPANS_MAX):
        self.downstream = downstream
        self.held_max = held_max
        self._held: dict[int, list[ReadableSpan]] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.parent is None and span.attributes and JOB_ATTRIBUTE in span.attributes:
            with self._lock:
                self._held[span.context.trace_id] = []
        self.downstream.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id if span.context else 0
        with self._lock:
            held = self._held.get(trace_id)
            if held is None:
                passing: list[ReadableSpan] = [span]
            elif span.parent is None:  # the job's root: its verdict decides for the whole trace
                del self._held[trace_id]
                idle = bool((span.attributes or {}).get(IDLE_ATTRIBUTE))
                passing = [] if idle else [*held, span]
            elif len(held) >= self.held_max:
                del self._held[trace_id]
                passing = [*held, span]
            else:
                held.append(span)
                passing = []
        for one in passing:
            self.downstream.on_end(one)

    def shutdown(self) -> None:
        self.downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.downstream.force_flush(timeout_millis)


_provider: TracerProvider | None = None


def configure_tracing(settings: Settings, conninfo: str) -> TracerProvider | None:
    """Install the process's tracer provider once; later calls return it unchanged."""
    global _provider
    if not settings.tracing or _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": "tally"}))
    exporter: SpanExporter
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = PostgresSpanExporter(conninfo)
    provider.add_span_processor(
        IdleJobFilter(BatchSpanProcessor(RedactingSpanExporter(exporter), schedule_delay_millis=1000))
    )
    trace.set_tracer_provider(provider)
    PsycopgInstrumentor().instrument(enable_commenter=False, skip_dep_check=True)
    HTTPXClientInstrumentor().instrument()  # Stripe calls (the SDK speaks httpx) become spans
    _provider = provider
    return provider


_metrics_configured = False


def configure_metrics(settings: Settings) -> None:
    """Install the process's meter provider once: read on ``GET /metrics`` (Prometheus) and, when
    an OTLP endpoint is set, exported there every minute too. Instruments made before this (at
    import) are bound to it by the API's proxy meters."""
    global _metrics_configured
    if _metrics_configured:
        return
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    from app.metrics import REGISTRY

    readers: list[MetricReader] = [PrometheusMetricReader(registry=REGISTRY)]
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(
        MeterProvider(resource=Resource.create({"service.name": "tally"}), metric_readers=readers)
    )
    _metrics_configured = True


def instrument_app(app: FastAPI, provider: TracerProvider | None) -> None:
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls="/static/.*,/healthz,/readyz,/metrics",
            server_request_hook=link_untrusted_parent,
        )


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
