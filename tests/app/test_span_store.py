"""The PostgreSQL span store: what the exporter writes, and the retention job."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app import jobs
from app.database import create_engine, libpq_url, session_factory
from app.settings import Settings
from app.span_redaction import RedactingSpanExporter
from app.telemetry import PostgresSpanExporter
from app.trace_store import recent_traces, spans_of
from tests.conftest import now


async def test_exported_spans_are_stored_and_searchable(database_url: str, session: AsyncSession) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PostgresSpanExporter(libpq_url(database_url))))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("billing run", attributes={"customer": "org_acme"}) as root,
        tracer.start_as_current_span("rate invoice"),
    ):
        pass
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    spans = await spans_of(session, trace_id)
    assert [span.name for span in spans] == ["billing run", "rate invoice"]
    assert spans[1].parent_span_id == spans[0].span_id
    found = await recent_traces(session, search="org_acme", before=None, limit=10)
    assert [(t.trace_id, t.root_name, t.span_count) for t in found] == [(trace_id, "billing run", 2)]


async def test_a_trace_is_found_by_the_id_of_what_it_carried(database_url: str, session: AsyncSession) -> None:
    """A usage event, a Stripe event and an invoice keep the trace that made them: searching their
    id finds it."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PostgresSpanExporter(libpq_url(database_url))))
    traces = {}
    for name in ("ingest", "webhook", "issue"):
        with provider.get_tracer("test").start_as_current_span(name) as span:
            traces[name] = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    await session.execute(
        text(
            "INSERT INTO events (event_id, customer_id, event_type, occurred_at, properties, received_at, trace_id) "
            "VALUES ('evt-carried', gen_random_uuid(), 'api.call', now(), '{}', now(), :trace)"
        ),
        {"trace": traces["ingest"]},
    )
    await session.execute(
        text(
            "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, deliveries, status, "
            "trace_id) VALUES ('evt_stripe_carried', 'charge.refunded', now(), false, '{}', now(), 1, 'ignored', :trace)"
        ),
        {"trace": traces["webhook"]},
    )
    await session.commit()
    for search, expected in (("evt-carried", "ingest"), ("evt_stripe_carried", "webhook"), ("nothing", None)):
        found = await recent_traces(session, search=search, before=None, limit=10)
        assert [t.root_name for t in found] == ([expected] if expected else []), search


async def test_retention_prunes_only_old_spans(database_url: str, session: AsyncSession) -> None:
    for name, age in (("old", timedelta(hours=30)), ("recent", timedelta(hours=1))):
        await session.execute(
            text(
                "INSERT INTO spans (trace_id, span_id, name, kind, status, start_time, duration_us, "
                "attributes, events, links) VALUES (:t, :s, :n, 'INTERNAL', 'UNSET', :at, 5, '{}', '[]', '[]')"
            ),
            {"t": name.ljust(32, "0"), "s": name.ljust(16, "0"), "n": name, "at": now() - age},
        )
    await session.commit()
    engine = create_engine(database_url)
    removed = await jobs.prune_spans(session_factory(engine), Settings(span_retention_hours=24), as_of=now())
    await engine.dispose()
    assert removed == 1
    left = (await session.execute(text("SELECT name FROM spans"))).scalars().all()
    assert left == ["recent"]


async def test_spans_are_stored_without_personal_data(database_url: str, session: AsyncSession) -> None:
    """URLs lose their query, SQL its literals, GraphQL operations their document, errors their
    message; ids, shapes and placeholders stay."""
    provider = TracerProvider()
    redacting = RedactingSpanExporter(PostgresSpanExporter(libpq_url(database_url)))
    provider.add_span_processor(SimpleSpanProcessor(redacting))
    tracer = provider.get_tracer("test")
    request_attributes = {
        "http.url": "http://tally.test/console/customers?search=ana%40example.com#top",
        "http.target": "/console/customers?search=ana",
        "net.peer.ip": "203.0.113.9",
        "tally.customer": "org_acme",
    }
    statement = (
        "SELECT * FROM customers WHERE email = 'ana@example.com' AND note = E'it\\'s ana' "
        'AND memo = $m$ana$m$ AND n = 42 AND "Name" = %(name)s AND id = %s'
    )
    with tracer.start_as_current_span("GET /console/customers", attributes=request_attributes) as root:
        with tracer.start_as_current_span("SELECT", attributes={"db.statement": statement}):
            pass
        graphql = {"component": "graphql", "query": '{ customers(search: "ana") { edges { node { id } } } }'}
        with contextlib.suppress(ValueError), tracer.start_as_current_span("GraphQL Query", attributes=graphql):
            raise ValueError("duplicate key: (email)=(ana@example.com)")
    provider.shutdown()
    spans = {span.name: span for span in await spans_of(session, format(root.get_span_context().trace_id, "032x"))}
    assert "ana" not in str([(span.attributes, span.events) for span in spans.values()])
    assert spans["GET /console/customers"].attributes == {
        "http.url": "http://tally.test/console/customers",
        "http.target": "/console/customers",
        "tally.customer": "org_acme",
    }
    assert spans["SELECT"].attributes["db.statement"] == (
        'SELECT * FROM customers WHERE email = ? AND note = E? AND memo = ? AND n = ? AND "Name" = %(name)s AND id = %s'
    )
    assert spans["GraphQL Query"].attributes == {"component": "graphql"}
    assert [event["attributes"] for event in spans["GraphQL Query"].events] == [
        {"exception.type": "ValueError", "exception.escaped": "False"}
    ]


async def test_the_default_list_shows_requests_and_jobs_not_stray_sql(database_url: str, session: AsyncSession) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PostgresSpanExporter(libpq_url(database_url))))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("GET /console/customers", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT customers", kind=SpanKind.CLIENT),
    ):
        pass
    with (
        tracer.start_as_current_span("job: roll-up", attributes={"tally.job": "roll-up"}),
        tracer.start_as_current_span("INSERT rollups", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("SELECT pg_try_advisory_lock", kind=SpanKind.CLIENT):
        pass
    provider.shutdown()
    default = await recent_traces(session, search=None, before=None, limit=10)
    assert sorted(t.root_name for t in default) == ["GET /console/customers", "job: roll-up"]
    everything = await recent_traces(session, search=None, before=None, limit=10, everything=True)
    assert sorted(t.root_name for t in everything) == [
        "GET /console/customers",
        "SELECT pg_try_advisory_lock",
        "job: roll-up",
    ]
