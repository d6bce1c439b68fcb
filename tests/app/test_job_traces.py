"""Background jobs leave a trace only when they did something: the roller polling every few
seconds must not fill the Traces page with its own empty queries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import jobs
from app.settings import Settings
from app.telemetry import IdleJobFilter
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from tests.conftest import now


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """What reaches the exporter when the jobs' tracer goes through the filter, as in `tally serve`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(IdleJobFilter(SimpleSpanProcessor(exporter)))
    monkeypatch.setattr(jobs, "tracer", provider.get_tracer("tally.jobs"))
    yield exporter
    provider.shutdown()


async def test_a_roll_up_that_found_nothing_leaves_no_trace_and_one_that_folded_usage_does(
    exported: InMemorySpanExporter, session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    assert await jobs.traced("roll-up", lambda: jobs.roll_up_usage(sessions)) == 0
    assert exported.get_finished_spans() == ()
    await create_customer(session, NewCustomer(external_id="org_traced", name="Traced", currency="USD"), as_of=now())
    await session.commit()
    event = {"id": "traced-1", "customer": "org_traced", "type": "request.completed", "timestamp": now().isoformat()}
    await ingest_and_commit(session, [{**event, "properties": {"model": "fast-1"}}], Settings())
    assert await jobs.traced("roll-up", lambda: jobs.roll_up_usage(sessions)) == 1
    [root] = exported.get_finished_spans()
    assert root.name == "job: roll-up" and root.attributes == {"tally.job": "roll-up"}


async def test_an_idle_job_drops_its_whole_trace_a_busy_or_failing_one_keeps_all_of_it(
    exported: InMemorySpanExporter,
) -> None:
    """The SQL spans of a job (children of its span) share its fate."""

    async def polls(found: int) -> int:
        with jobs.tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            return found

    async def fails() -> int:
        with jobs.tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            raise RuntimeError("the database went away")

    await jobs.traced("email sending", lambda: polls(0))
    assert exported.get_finished_spans() == ()
    await jobs.traced("email sending", lambda: polls(3))
    assert [span.name for span in exported.get_finished_spans()] == ["SELECT", "job: email sending"]
    exported.clear()
    with pytest.raises(RuntimeError):
        await jobs.traced("collection", fails)
    assert [span.name for span in exported.get_finished_spans()] == ["SELECT", "job: collection"]


def test_spans_outside_a_job_pass_straight_through() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(IdleJobFilter(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /console/customers", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            assert [span.name for span in exporter.get_finished_spans()] == []
        assert [span.name for span in exporter.get_finished_spans()] == ["SELECT"], "not held back"


def test_a_very_long_job_is_not_held_in_memory() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(IdleJobFilter(SimpleSpanProcessor(exporter), held_max=3))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job: billing run", attributes={"tally.job": "billing run"}):
        for _ in range(5):
            with tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT):
                pass
        assert len(exporter.get_finished_spans()) == 5, "past the limit, the held spans go on at once"
    assert len(exporter.get_finished_spans()) == 6
