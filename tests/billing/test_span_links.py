"""The span that issues an invoice names it and links the ingest traces of the usage it rated,
late usage included; no personal data (names, external ids) rides along."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from metering.service import ingest
from tests.billing.scenario import FEB_28, JAN_31, LIMITS, MAR_31, subscribe


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """What this process's tracer provider records during the test (installing one if none is)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    exporter.shutdown()


async def send(session: AsyncSession, prefix: str, count: int, at: datetime, received: datetime, trace_id: str) -> None:
    items = [
        {
            "id": f"{prefix}-{i}",
            "customer": "acme",
            "type": "api.call",
            "timestamp": at.isoformat(),
            "properties": {"region": "eu"},
        }
        for i in range(count)
    ]
    assert (await ingest(session, items, received_at=received, limits=LIMITS, trace_id=trace_id)).accepted == count
    await session.commit()


async def test_issuance_links_the_ingest_traces_it_rated(
    spans: InMemorySpanExporter,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    feb, late, march = "a" * 32, "b" * 32, "c" * 32
    await send(session, "feb", 150, datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 2, 10, 0, 1, tzinfo=UTC), feb)
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    await send(session, "late", 30, datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC), late)
    await send(session, "mar", 10, datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 10, 0, 1, tzinfo=UTC), march)
    spans.clear()

    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))

    [issued] = [span for span in spans.get_finished_spans() if span.name == "billing.invoice.issue"]
    assert issued.attributes is not None
    assert issued.attributes["tally.customer_id"] == str(customer_id)
    assert (issued.attributes["tally.invoice.kind"], issued.attributes["tally.invoice.lines"]) == ("period", 3)
    assert issued.attributes["tally.invoice.total_minor"] == 1300  # late 3.00 + March's base fee 10.00
    assert "acme" not in str(dict(issued.attributes)), "no external id or name"
    links = {format(link.context.trace_id, "032x"): dict(link.attributes or {}) for link in issued.links}
    assert set(links) == {feb, late, march}, "February (re-rated for its late usage) and March"
    assert links[late]["tally.events"] == 30 and links[late]["tally.period_start"] == JAN_31.isoformat()
    assert links[march] == {
        "tally.link": "ingest",
        "tally.period_start": FEB_28.isoformat(),
        "tally.events": 10,
        "tally.event_id": "mar-0",
    }
    [run] = [span for span in spans.get_finished_spans() if span.name == "billing.run"]
    assert issued.parent is not None and issued.parent.span_id == run.context.span_id
