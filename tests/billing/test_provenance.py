"""Invoice provenance against the real database: what it reports adds up to the line's quantity,
for a line split by dimensions and for a late-usage line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices import service as billing
from billing.invoices.provenance import explain_line
from metering.service import ingest
from tests.billing.scenario import FEB_28, JAN_31, LIMITS, MAR_31, invoices_of, send_calls, subscribe
from tests.conftest import graphql


async def send_region_calls(session: AsyncSession, external_id: str, region: str, count: int, at: datetime) -> None:
    items = [
        {
            "id": f"{external_id}-{region}-{at.isoformat()}-{i}",
            "customer": external_id,
            "type": "api.call",
            "timestamp": (at + timedelta(minutes=i)).isoformat(),
            "properties": {"region": region},
        }
        for i in range(count)
    ]
    result = await ingest(
        session, items, received_at=at + timedelta(hours=3), limits=LIMITS, trace_id=f"{region:0>2}".ljust(32, "a")
    )
    assert result.accepted == count
    await session.commit()


async def test_a_line_per_dimensions_is_explained_by_its_own_rollups_and_events(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_region_calls(session, "acme", "eu", 70, datetime(2026, 2, 10, 9, tzinfo=UTC))
    await send_region_calls(session, "acme", "eu", 50, datetime(2026, 2, 12, 15, tzinfo=UTC))
    await send_region_calls(session, "acme", "us", 40, datetime(2026, 2, 11, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    lines = (await billing.lines_of(session, [closing.id]))[closing.id]
    eu = next(line for line in lines if line.dimensions == {"region": "eu"})
    assert eu.quantity == 120

    explained = await explain_line(session, closing, eu)

    usage = explained.usage
    assert usage is not None and explained.plan is not None
    assert [group.dimensions for group in usage.rollups] == [{"region": "eu"}], "the us calls are another line's"
    assert sum(group.quantity for group in usage.rollups) == usage.rollup_quantity == eu.quantity
    assert sum(group.event_count for group in usage.rollups) == usage.events.count == eu.quantity
    assert usage.events.quantity == eu.quantity
    assert sum(group.hours for group in usage.rollups) == 3  # 09:00-10:59 on the 10th, 15:00 on the 12th
    assert (usage.events.first_at, usage.events.last_at) == (
        datetime(2026, 2, 10, 9, tzinfo=UTC),
        datetime(2026, 2, 12, 15, 49, tzinfo=UTC),
    )
    assert len(usage.events.samples) == 5
    assert all(sample.event_id.startswith("acme-eu-") for sample in usage.events.samples)
    assert {sample.trace_id for sample in usage.events.samples} == {"eu".ljust(32, "a")}
    assert (usage.previously_billed, usage.arrived_later) == (None, 0)
    assert (explained.plan.plan_key, explained.plan.version) == ("basic", 1)
    assert explained.summary == "120 event(s) of calls, over 3 rollup hour(s)"


async def test_a_late_usage_line_is_what_arrived_after_its_period_was_billed(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    await send_calls(session, "acme", 30, datetime(2026, 2, 20, tzinfo=UTC), received=datetime(2026, 3, 5, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))
    february, march = (await invoices_of(session, customer_id))[-2:]
    march_lines = (await billing.lines_of(session, [march.id]))[march.id]
    late = next(line for line in march_lines if line.kind == "late_usage")
    assert late.quantity == 30

    usage = (await explain_line(session, march, late)).usage

    assert usage is not None and usage.previously_billed is not None
    assert (usage.start, usage.end) == (JAN_31, FEB_28), "the original period"
    assert usage.events.count == usage.events.quantity == late.quantity
    assert usage.received_after == february.issued_at
    assert usage.rollup_quantity - usage.previously_billed - usage.arrived_later == late.quantity
    assert (usage.rollup_quantity, usage.previously_billed) == (Decimal(180), Decimal(150))
    assert all(s.received_at == datetime(2026, 3, 5, tzinfo=UTC) for s in usage.events.samples)

    # The February usage line is explained as it was billed, though 30 more calls arrived since.
    feb_usage = next(
        line for line in (await billing.lines_of(session, [february.id]))[february.id] if line.kind == "usage"
    )
    explained = (await explain_line(session, february, feb_usage)).usage
    assert explained is not None
    assert explained.events.count == feb_usage.quantity == 150
    assert explained.rollup_quantity - explained.arrived_later == feb_usage.quantity


async def test_a_base_fee_is_explained_by_its_plan_version_and_period(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(seconds=1))
    [opening] = await invoices_of(session, customer_id)
    [fee] = (await billing.lines_of(session, [opening.id]))[opening.id]

    explained = await explain_line(session, opening, fee)

    assert explained.usage is None and explained.plan is not None
    assert (explained.plan.plan_name, explained.plan.base_fee, explained.plan.share) == ("Basic", 10, 1)
    assert (explained.plan.start, explained.plan.end) == (JAN_31, FEB_28)
    assert explained.summary == "Basic v1, 100.00% of the period"


PROVENANCE = """query($number: String!, $position: Int!) { invoice(number: $number) { line(position: $position) {
  kind quantity provenance { summary plan { planKey version shareOfPeriod }
    usage { meterKey where rollups { dimensions hours eventCount quantity } rollupQuantity previouslyBilled
            arrivedLater events { count quantity firstEventAt lastEventAt samples { eventId traceId } } } } } } }"""


async def test_provenance_through_graphql_for_the_customer_and_not_for_another(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await subscribe(session, "other", "basic", JAN_31)
    await send_region_calls(session, "acme", "eu", 12, datetime(2026, 2, 10, 9, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    variables = {"number": str(closing.number), "position": 0}

    found = await graphql(client, await token_for("customer", "acme"), PROVENANCE, variables)

    line = found.json()["data"]["invoice"]["line"]
    usage = line["provenance"]["usage"]
    assert (line["kind"], line["quantity"]) == ("USAGE", "12")
    assert usage["rollups"] == [{"dimensions": {"region": "eu"}, "hours": 1, "eventCount": 12, "quantity": "12"}]
    assert usage["events"]["count"] == 12 and usage["events"]["quantity"] == "12"
    assert usage["events"]["samples"][0] == {
        "eventId": "acme-eu-2026-02-10T09:00:00+00:00-0",
        "traceId": "eu".ljust(32, "a"),
    }
    assert line["provenance"]["plan"] == {"planKey": "basic", "version": 1, "shareOfPeriod": None}
    stranger = await graphql(client, await token_for("customer", "other"), PROVENANCE, variables)
    assert stranger.json()["data"]["invoice"] is None
