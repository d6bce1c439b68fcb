"""GET /metrics scraped over real HTTP (uvicorn on a free port) as Prometheus would, after usage
is ingested and a billing run issues invoices: the series an operator watches, with their values.
Counters and histograms are the process's, so they are compared before and after."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.jobs import roll_up_usage, snapshot_gauges
from app.metrics import REGISTRY
from app.settings import Settings
from billing.findings import Finding, raise_anomaly
from customers.service import NewCustomer, create_customer

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Series:
    """Every sample by name and labels, without the OpenTelemetry scope labels, and without empty
    ones: the exporter writes a label another sample of the family has as ``code=""``, so a
    series' labels change once the family's first sample with that label is recorded."""
    return {
        (
            sample.name,
            frozenset((k, v) for k, v in sample.labels.items() if v and not k.startswith("otel_scope")),
        ): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset((k, v) for k, v in labels.items() if v)), 0.0)


async def test_metrics_after_ingesting_and_billing(
    live_url: str,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    catalog: None,
    token_for,
) -> None:
    as_of = datetime.now(UTC)
    started = as_of - timedelta(days=40)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_m", name="Metrics", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.commit()
    ingest = {"Authorization": f"Bearer {await token_for('ingest')}"}
    twenty_days_ago = (as_of - timedelta(days=20)).isoformat()
    events = [
        {
            "id": f"m-{i}",
            "customer": "org_m",
            "type": "request.completed",
            "timestamp": twenty_days_ago,
            "properties": {"model": "fast-1"},
        }
        for i in range(3)
    ]
    stranger = {**events[0], "id": "m-x", "customer": "org_unknown"}

    async with httpx.AsyncClient(base_url=live_url) as http:
        before = parse((await http.get("/metrics")).text)
        answer = await http.post("/v1/events", json=[*events, events[0], {"id": ""}, stranger], headers=ingest)
        assert answer.json()["accepted"] == 3
        report = await run_billing(sessions, settings, as_of=as_of)
        assert report.invoices_issued == 2  # the opening invoice and the one closing the first period
        await session.execute(
            text(
                "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, deliveries, status) "
                "VALUES ('evt_failed', 'payment_intent.succeeded', now(), false, '{}', now(), 1, 'failed')"
            )
        )
        await session.execute(
            text(
                "INSERT INTO reconciliation_discrepancies (id, kind, object_id, summary, detected_at, last_seen_at, "
                "status) VALUES (:id, 'MISSING_IN_TALLY', 'pi_1', 'a payment Tally has not seen', now(), now(), 'open')"
            ),
            {"id": uuid.uuid4()},
        )
        finding = Finding("INVOICE_DELTA", customer.id, started, as_of, "medium", "total jumped", {"total": 1})
        await raise_anomaly(session, finding, as_of=as_of)
        await session.commit()
        scraped = await http.get("/metrics")

    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=")
    after = parse(scraped.text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tally_metering_events_total", outcome="accepted", code="") == 3
    assert grew("tally_metering_events_total", outcome="duplicate", code="") == 1
    assert grew("tally_metering_events_total", outcome="rejected", code="INVALID_ID") == 1
    assert grew("tally_metering_events_total", outcome="rejected", code="UNKNOWN_CUSTOMER") == 1
    assert grew("tally_metering_ingest_lag_milliseconds_count") == 3
    assert grew("tally_metering_ingest_lag_milliseconds_bucket", le="604800000.0") == 0, "20 days is over a week"
    assert grew("tally_metering_processing_lag_milliseconds_count") == 1
    assert grew("tally_billing_invoices_issued_total", currency="USD", kind="opening") == 1
    assert grew("tally_billing_invoices_issued_total", currency="USD", kind="period") == 1
    assert grew("tally_billing_run_duration_seconds_count") == 1
    # Gauges are read from this database at the scrape.
    assert value(after, "tally_collection_outbox_depth", status="pending") == 2  # both invoices are due
    assert value(after, "tally_collection_outbox_depth", status="in_flight") == 0
    assert 0 <= value(after, "tally_collection_outbox_oldest_age_seconds", status="pending") < 60
    assert value(after, "tally_stripe_webhooks_failed") == 1
    assert value(after, "tally_reconciliation_discrepancies_open") == 1
    assert value(after, "tally_anomalies_open", kind="INVOICE_DELTA") == 1
    assert value(after, "tally_metering_rollup_waiting") == 3, "no roller runs in this app"
    assert 0 <= value(after, "tally_metering_rollup_oldest_wait_seconds") < 60
    await roll_up_usage(sessions)
    async with httpx.AsyncClient(base_url=live_url) as http:
        rolled = parse((await http.get("/metrics")).text)
    assert rolled[("tally_metering_rollup_waiting", frozenset())] == 0
    watermark_age = value(rolled, "tally_metering_watermark_age_seconds")
    assert 20 * 86400 <= watermark_age < 20 * 86400 + 60


async def test_the_jobs_gauge_snapshot_reads_the_event_log_for_otlp(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """`tally serve`'s jobs refresh the gauges an OTLP exporter reads: the event log's too, when
    one is configured (here one that does not answer, within the configured wait)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]
    await snapshot_gauges(sessions, settings, as_of=datetime.now(UTC))
    assert "tally_event_log_" not in generate_latest(REGISTRY).decode(), "no log configured: no log gauges"
    edge = settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{nobody}", "nats_publish_timeout_seconds": 0.5})
    started = time.monotonic()
    await snapshot_gauges(sessions, edge, as_of=datetime.now(UTC))
    assert time.monotonic() - started < 5
    exported = parse(generate_latest(REGISTRY).decode())
    assert exported[("tally_event_log_reachable", frozenset())] == 0.0
    assert value(exported, "tally_metering_rollup_waiting") == 0.0, "the database gauges are refreshed as before"
