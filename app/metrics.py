"""Tally's metrics, as OpenTelemetry instruments: on ``GET /metrics`` in Prometheus' text format,
and by OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Counters and histograms are recorded where things happen: ingestion (``metering.service``), the
billing run, the invoice accuracy check. The gauges that live in the database (collection outbox,
failed webhooks, open discrepancies and anomalies, the oldest watermark, the roller's backlog) come
from one snapshot query (:func:`billing.insights.gauges.gauge_snapshot`), taken on each scrape of
``/metrics`` and by the periodic jobs (for OTLP); the gauges' callbacks only read the last snapshot. Callbacks run
synchronously, in the exporter's thread, out of reach of the async database; and one query per
scrape, whatever the number of series, keeps a scrape cheap.

The event log's backlog (edge mode) is read from JetStream on each scrape, before the database and
bounded by :data:`metering.log_backlog.READ_TIMEOUT_SECONDS`: while PostgreSQL is down a scrape
still answers with the log's gauges (the database's are then absent), which is when they matter.
Without a log, or when it did not answer, its per-partition gauges are absent;
``tally_event_log_reachable`` says which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.dependencies import SessionDep
from billing.insights.gauges import GaugeSnapshot, gauge_snapshot
from metering.event_log import EventLog
from metering.log_backlog import READ_TIMEOUT_SECONDS, LogBacklog, LogState, read_backlog

logger = logging.getLogger("tally.metrics")

#: What ``GET /metrics`` serves: Tally's instruments only (not the Python process collectors).
REGISTRY = CollectorRegistry()

_meter = metrics.get_meter("tally")
BILLING_RUN_DURATION = _meter.create_histogram(
    "tally.billing.run.duration",
    unit="s",
    description="How long a billing run took",
    explicit_bucket_boundaries_advisory=[0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
)
INVOICES_ISSUED = _meter.create_counter("tally.billing.invoices_issued", description="Invoices issued, by currency")
BILLING_FAILURES = _meter.create_counter(
    "tally.billing.failures",
    description="Tries at a customer's invoice that raised; each customer is retried with backoff",
)
STRIPE_EVENT_FAILURES = _meter.create_counter(
    "tally.stripe.events.failures", description="Tries at processing a Stripe event that failed, by event type"
)
WEBHOOK_DELIVERIES = _meter.create_counter(
    "tally.webhook.deliveries",
    description="Outbound webhook POSTs, by outcome: delivered, retrying (to be tried again) or failed (given up)",
)
WEBHOOK_DELIVERY_DURATION = _meter.create_histogram(
    "tally.webhook.delivery.duration",
    unit="s",
    description="How long an endpoint took to answer an outbound webhook POST (or to time out)",
    explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
)
INVOICE_ACCURACY_DIFFERENCES = _meter.create_gauge(
    "tally.invoice_accuracy_differences",
    description="Lines that differ when the last sample of issued invoices was re-rated from raw events; target 0",
)

_snapshot: GaugeSnapshot | None = None
_log_backlog: LogBacklog | None = None


async def refresh_gauges(session: AsyncSession, *, as_of: datetime) -> GaugeSnapshot:
    global _snapshot
    try:
        _snapshot = await gauge_snapshot(session, as_of=as_of)
    except BaseException:
        _snapshot = None  # a snapshot that could not be refreshed is not served as if it were current
        raise
    return _snapshot


async def refresh_log_gauges(
    event_log: EventLog | None, *, as_of: datetime, wait_seconds: float = READ_TIMEOUT_SECONDS
) -> LogBacklog:
    global _log_backlog
    _log_backlog = await read_backlog(event_log, as_of=as_of, wait_seconds=wait_seconds)
    return _log_backlog


def _observe_log(
    read: Callable[[LogBacklog], Iterable[Observation]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        if _log_backlog is None or _log_backlog.state is LogState.NOT_IN_USE:
            return []
        return list(read(_log_backlog))

    return callback


def _pending(backlog: LogBacklog) -> Iterable[Observation]:
    return [Observation(p.pending, {"partition": str(p.partition)}) for p in backlog.partitions]


def _oldest_pending_seconds(backlog: LogBacklog) -> Iterable[Observation]:
    """0 for a partition with nothing pending, so a drained backlog reads 0 rather than vanishing."""
    return [
        Observation(
            (p.oldest_pending_age(backlog.read_at) or timedelta(0)).total_seconds(), {"partition": str(p.partition)}
        )
        for p in backlog.partitions
    ]


def _reachable(backlog: LogBacklog) -> Iterable[Observation]:
    return [Observation(1 if backlog.state is LogState.READ else 0)]


def _observe(read: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        if _snapshot is None:
            return []
        value = getattr(_snapshot, read)
        if value is None:
            return []
        if isinstance(value, dict):
            label = "kind" if read == "anomalies_open" else "status"
            return [Observation(v, {label: k}) for k, v in sorted(value.items())]
        return [Observation(value)]

    return callback


for name, read, unit, description in (
    ("tally.collection.outbox.depth", "outbox_depth", "", "Invoices waiting in the collection outbox, by status"),
    ("tally.collection.outbox.oldest_age", "outbox_oldest_age_seconds", "s", "Age of the oldest row, by status"),
    ("tally.stripe.webhooks.failed", "webhooks_failed", "", "Stored Stripe events whose processing failed"),
    ("tally.billing.customers_failing", "customers_failing", "", "Customers whose invoice could not be issued"),
    ("tally.reconciliation.discrepancies.open", "discrepancies_open", "", "Open ledger-vs-Stripe discrepancies"),
    ("tally.anomalies.open", "anomalies_open", "", "Open anomalies, by kind"),
    ("tally.metering.watermark_age", "watermark_age_seconds", "s", "Age of the oldest customer watermark"),
    ("tally.metering.rollup.waiting", "rollup_waiting", "", "Counted measurements not yet folded into the rollups"),
    ("tally.metering.rollup.oldest_wait", "rollup_oldest_wait_seconds", "s", "How long the oldest of them has waited"),
):
    _meter.create_observable_gauge(name, callbacks=[_observe(read)], unit=unit, description=description)

for name, read_log, unit, description in (
    ("tally.event_log.pending", _pending, "", "Messages in the event log not yet counted in PostgreSQL, by partition"),
    (
        "tally.event_log.oldest_pending",
        _oldest_pending_seconds,
        "s",
        "How long the oldest message not yet counted has waited in the event log, by partition (0: none waits)",
    ),
    ("tally.event_log.reachable", _reachable, "", "1 when the event log's backlog could be read at the last scrape"),
):
    _meter.create_observable_gauge(name, callbacks=[_observe_log(read_log)], unit=unit, description=description)


router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def prometheus_metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus' scrape: the log's gauges and the database's (one query) are refreshed first; a
    database that cannot be reached leaves its gauges out of this scrape rather than failing it."""
    as_of = datetime.now(UTC)
    await refresh_log_gauges(request.app.state.event_log, as_of=as_of)
    try:
        await refresh_gauges(session, as_of=as_of)
    except (OSError, SQLAlchemyError) as error:
        logger.warning("the database gauges could not be read for this scrape: %r", error)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
