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
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
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
    provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter), schedule_delay_millis=1000))
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
