"""The Traces page lists requests and jobs; stray SQL only when asked for."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import libpq_url
from app.staff import create_user
from app.telemetry import PostgresSpanExporter
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in


async def test_the_traces_page_hides_stray_sql_unless_asked(
    client: httpx.AsyncClient, session: AsyncSession, database_url: str
) -> None:
    await create_user(session, email="viewer@example.com", role="viewer", password=PASSWORD, as_of=now())
    await session.commit()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PostgresSpanExporter(libpq_url(database_url))))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job: stripe events", attributes={"tally.job": "stripe events"}):
        pass
    with tracer.start_as_current_span("SELECT pg_try_advisory_lock", kind=SpanKind.CLIENT):
        pass
    provider.shutdown()
    await sign_in(client, "viewer@example.com", PASSWORD)

    page = (await client.get("/console/traces")).text
    assert "job: stripe events" in page and "pg_try_advisory_lock" not in page
    assert 'name="show" value="all">' in page, "unticked"
    everything = await client.get("/console/traces", params={"show": "all"}, headers={"HX-Request": "true"})
    assert "job: stripe events" in everything.text and "pg_try_advisory_lock" in everything.text
    assert "<form" not in everything.text, "htmx gets the rows alone"
