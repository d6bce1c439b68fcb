"""Ingestion reports its lags and outcomes as OpenTelemetry metrics (read through the process's
meter provider, as `GET /metrics` reads them; counters are the process's, compared before and after)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.metrics import REGISTRY
from app.settings import Settings
from app.telemetry import configure_metrics
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from tests.app.test_metrics import parse, value
from tests.conftest import now


async def test_ingest_lag_processing_lag_and_outcomes_are_recorded(session: AsyncSession, catalog: None) -> None:
    configure_metrics(Settings())
    before = parse(generate_latest(REGISTRY).decode())
    await create_customer(session, NewCustomer(external_id="org_lag", name="Lag", currency="USD"), as_of=now())
    await session.commit()
    ten_minutes_ago = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    events = [
        {
            "id": f"lag-{i}",
            "customer": "org_lag",
            "type": "request.completed",
            "timestamp": ten_minutes_ago,
            "properties": {"model": "fast-1"},
        }
        for i in range(4)
    ]
    await ingest_and_commit(session, [*events, events[0], {"id": ""}], Settings())
    after = parse(generate_latest(REGISTRY).decode())

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tally_metering_ingest_lag_milliseconds_count") == 4
    assert grew("tally_metering_ingest_lag_milliseconds_bucket", le="300000.0") == 0, "each lag is over 10 minutes"
    assert grew("tally_metering_processing_lag_milliseconds_count") == 1
    assert grew("tally_metering_events_total", outcome="accepted", code="") == 4
    assert grew("tally_metering_events_total", outcome="duplicate", code="") == 1
    assert grew("tally_metering_events_total", outcome="rejected", code="INVALID_ID") == 1
