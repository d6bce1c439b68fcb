"""Ingestion reports its lags and outcomes as OpenTelemetry metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from tests.conftest import now


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    found: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_ingest_lag_processing_lag_and_outcomes_are_recorded(session: AsyncSession, catalog: None) -> None:
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
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
    found = points(reader)
    [ingest_lag] = found["tally.metering.ingest_lag"]
    assert ingest_lag.count == 4 and ingest_lag.min >= 10 * 60 * 1000
    assert found["tally.metering.processing_lag"][0].count == 1
    outcomes = {
        (p.attributes.get("outcome"), p.attributes.get("code")): p.value for p in found["tally.metering.events"]
    }
    assert outcomes[("accepted", None)] == 4
    assert outcomes[("duplicate", None)] == 1
    assert outcomes[("rejected", "INVALID_ID")] == 1
