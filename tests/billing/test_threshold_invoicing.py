"""Threshold (progressive) invoicing: a month worked out by hand (graduated tiers, an allowance, a
charge minimum that stays on the period invoice), two roller passes at once issuing one interim
invoice, and a property over random event streams: the interim invoices and the period invoice
bill exactly what one invoice of the whole period would have, each interim invoice issued when,
and only when, the unbilled usage reached the threshold."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, session_factory
from app.jobs import roll_up_usage
from app.settings import Settings
from app.threshold_run import invoice_thresholds
from app.usage_ingest import ingest_limits
from billing.insights.accuracy import check_invoice
from billing.invoices import service as billing
from billing.invoices.provenance import explain_line
from billing.invoices.service import BillingWindow
from billing.invoices.threshold_invoicing import issue_interim_invoice
from customers.service import NewCustomer, create_customer, subscriptions_of
from ledger.money import round_to_minor
from metering.service import ingest, roll_up
from pricing.rating import ChargeTerms, Tier, rate
from pricing.service import apply_catalog
from tests.billing.scenario import invoices_of, lines_of

WINDOW = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))
LIMITS = ingest_limits(Settings())
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)

METER = """
[[meters]]
key = "tokens"
name = "Tokens"
unit = "token"
event_type = "llm.tokens"
aggregation = "sum"
value_property = "tokens"
"""


def plan_toml(key: str, *, model: str, threshold: str, included: int, minimum: str | None = None) -> str:
    minimum_line = f'minimum = "{minimum}"\n' if minimum else ""
    return f"""
[[plans]]
key = "{key}"
name = "{key}"
currency = "USD"
interval = "month"
base_fee = "20.00"
invoice_threshold = "{threshold}"

  [[plans.charges]]
  meter = "tokens"
  model = "{model}"
  included = {included}
  {minimum_line}
  tiers = [{{ up_to = 1000, unit_price = "0.01" }}, {{ up_to = "inf", unit_price = "0.005" }}]
"""


TIERS = (Tier(Decimal(1000), Decimal("0.01")), Tier(None, Decimal("0.005")))


async def subscribe(session: AsyncSession, plan: str, started_at: datetime = NOV_1) -> tuple[uuid.UUID, str]:
    """A customer on ``plan`` from ``started_at``, its opening invoice issued (the period is open)."""
    external_id = f"t-{uuid.uuid4().hex[:10]}"
    customer = await create_customer(
        session,
        NewCustomer(external_id=external_id, name=external_id, currency="USD", plan_key=plan, started_at=started_at),
        as_of=started_at,
    )
    await session.commit()
    assert await billing.issue_next_invoice(session, customer.id, as_of=started_at, window=WINDOW) is not None
    await session.commit()
    return customer.id, external_id


async def use(session: AsyncSession, external_id: str, tokens: int, at: datetime) -> None:
    item = {
        "id": uuid.uuid4().hex,
        "customer": external_id,
        "type": "llm.tokens",
        "timestamp": at.isoformat(),
        "properties": {"tokens": tokens},
    }
    result = await ingest(session, [item], received_at=at + timedelta(seconds=1), limits=LIMITS, trace_id=None)
    assert result.accepted == 1
    await roll_up(session)
    await session.commit()


async def check(session: AsyncSession, customer_id: uuid.UUID, at: datetime) -> Any:
    """One threshold check, as the roller runs it: the interim invoice issued, or None."""
    [subscription_id] = [s.id for s in (await subscriptions_of(session, [customer_id])).values()]
    invoice = await issue_interim_invoice(session, customer_id, subscription_id, as_of=at)
    await session.commit()
    return invoice


@pytest.fixture
async def over_threshold(session: AsyncSession) -> tuple[uuid.UUID, str]:
    """A customer since yesterday on a plan invoicing at 10.00 (graduated, 100 tokens included),
    who used 2000 tokens an hour ago: 14.50 unbilled, over the threshold, no interim invoice yet."""
    moment = datetime.now(UTC)
    catalog = METER + plan_toml("metered", model="graduated", threshold="10.00", included=100)
    await apply_catalog(session, catalog, as_of=moment - timedelta(days=2))
    await session.commit()
    found = await subscribe(session, "metered", moment - timedelta(days=1))
    await use(session, found[1], 2000, moment - timedelta(hours=1))
    return found


async def usage_billed(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[str, int | None, int]]:
    """(kind, interim sequence, usage amount in cents) of each invoice, in order."""
    found = []
    for invoice in await invoices_of(session, customer_id):
        usage = sum(amount for kind, _, _, amount in await lines_of(session, invoice.id) if kind == "usage")
        found.append((invoice.kind, invoice.interim_sequence, usage))
    return found


async def test_a_month_billed_in_interim_invoices_then_the_rest(session: AsyncSession) -> None:
    """Graduated 0.01 to 1000 then 0.005, 100 tokens included, a 40.00 charge minimum, invoiced
    at 10.00. 700 tokens: 6.00, nothing. 1600: 12.50, interim 1. 2600: 17.50, 5.00 unbilled,
    nothing. 4600: 27.50, interim 2 of 15.00. 4800: 28.50. The period invoice bills the 40.00
    minimum less the 27.50 of the interim invoices, and the next month's fee."""
    await apply_catalog(
        session,
        METER + plan_toml("metered", model="graduated", threshold="10.00", included=100, minimum="40.00"),
        as_of=NOV_1 - timedelta(days=1),
    )
    await session.commit()
    customer_id, external_id = await subscribe(session, "metered")
    issued = []
    for day, tokens in ((2, 700), (5, 900), (10, 1000), (20, 2000), (25, 200)):
        at = NOV_1 + timedelta(days=day)
        await use(session, external_id, tokens, at)
        issued.append(await check(session, customer_id, at + timedelta(minutes=1)))
    assert [invoice and (invoice.kind, invoice.interim_sequence, invoice.total) for invoice in issued] == [
        None,
        ("interim", 1, 1250),
        None,
        ("interim", 2, 1500),
        None,
    ]
    assert issued[1].status == "issued" and issued[1].amount_due == 1250  # collected as any invoice
    assert await lines_of(session, issued[3].id) == [("usage", "Tokens", Decimal(3000), 1500)]
    await billing.issue_next_invoice(session, customer_id, as_of=DEC_1 + timedelta(hours=2), window=WINDOW)
    await session.commit()
    period = (await invoices_of(session, customer_id))[-1]
    assert await lines_of(session, period.id) == [
        ("usage", "Tokens, less interim invoices", Decimal(200), 1250),
        ("base_fee", "metered v1 base fee, 2026-12-01 to 2027-01-01", Decimal(1), 2000),
    ]
    assert [usage for _, _, usage in await usage_billed(session, customer_id)] == [0, 1250, 1500, 1250]
    assert (await check_invoice(session, period)).differences == []  # the accuracy check adds them back
    # "Why this amount?": 4800 tokens were used, 4600 of them billed by the interim invoices before.
    [usage_line, _] = (await billing.lines_of(session, [period.id]))[period.id]
    why = await explain_line(session, period, usage_line)
    assert why.usage is not None and why.usage.previously_billed == Decimal(4600)
    assert why.summary.startswith("5 event(s) of tokens measuring 4800 token (4600 of it billed by earlier interim")
    # Nothing more: the period is closed, and a check of the next one finds nothing to bill.
    assert await check(session, customer_id, DEC_1 + timedelta(hours=3)) is None


async def test_two_roller_passes_at_once_issue_one_interim_invoice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await apply_catalog(
        session,
        METER + plan_toml("racy", model="volume", threshold="5.00", included=0),
        as_of=NOV_1 - timedelta(days=1),
    )
    await session.commit()
    customer_id, external_id = await subscribe(session, "racy")
    at = NOV_1 + timedelta(days=3)
    await use(session, external_id, 800, at)  # 8.00: over the threshold
    passes = await asyncio.gather(
        *(invoice_thresholds(sessions, settings, as_of=at + timedelta(minutes=1)) for _ in range(4))
    )
    assert sorted(len(issued) for issued in passes) == [0, 0, 0, 1]
    assert await usage_billed(session, customer_id) == [("opening", None, 0), ("interim", 1, 800)]
    # Were the lock ever bypassed, the database refuses a second interim invoice of the same number.
    copy = (
        "INSERT INTO invoices (id, customer_id, subscription_id, number, kind, status, currency, period_start, "
        "period_end, subtotal, credits_applied, total, amount_due, issued_at, interim_sequence) "
        "SELECT gen_random_uuid(), customer_id, subscription_id, number + 1000, kind, status, currency, "
        "period_start, period_end, subtotal, credits_applied, total, amount_due, issued_at, interim_sequence "
        "FROM invoices WHERE customer_id = :c AND kind = 'interim'"
    )
    with pytest.raises(IntegrityError, match="invoices_one_interim_per_sequence"):
        await session.execute(text(copy), {"c": customer_id})
    await session.rollback()


async def test_the_roller_issues_the_interim_invoice_in_the_pass_that_folds_the_crossing_usage(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """No other job is needed: the roll-up that folds the usage checks the customers it touched."""
    moment = datetime.now(UTC)
    catalog = METER + plan_toml("rolled", model="graduated", threshold="10.00", included=100)
    await apply_catalog(session, catalog, as_of=moment - timedelta(days=2))
    await session.commit()
    customer_id, external_id = await subscribe(session, "rolled", moment - timedelta(days=1))
    item = {"id": uuid.uuid4().hex, "customer": external_id, "type": "llm.tokens",
            "timestamp": (moment - timedelta(minutes=5)).isoformat(), "properties": {"tokens": 2000}}  # fmt: skip
    assert (await ingest(session, [item], received_at=moment, limits=LIMITS, trace_id=None)).accepted == 1
    await session.commit()
    assert await usage_billed(session, customer_id) == [("opening", None, 0)]

    await roll_up_usage(sessions, settings=settings)

    assert await usage_billed(session, customer_id) == [("opening", None, 0), ("interim", 1, 1450)]


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    """A period's usage: up to 6 events at random minutes of November, each of random tokens, a
    threshold, a graduated or volume charge with an allowance, and which events a check follows."""
    events = draw(st.lists(st.tuples(st.integers(0, 29 * 24 * 60), st.integers(1, 3000)), min_size=1, max_size=6))
    return {
        "events": sorted(events),
        "checks": draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events))),
        "threshold": draw(st.integers(1, 4000)),  # cents
        "model": draw(st.sampled_from(["graduated", "volume"])),
        "included": draw(st.sampled_from([0, 250, 1500])),
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=streams())
def test_interim_and_period_invoices_bill_exactly_one_invoice_of_the_whole_period(
    database_url: str, stream: dict[str, Any]
) -> None:
    threshold = Decimal(stream["threshold"]) / 100
    terms = ChargeTerms(model=stream["model"], tiers=TIERS, included=Decimal(stream["included"]))

    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                plan = f"p{uuid.uuid4().hex[:12]}"
                known = await session.scalar(text("SELECT count(*) FROM meters"))
                catalog = plan_toml(plan, model=stream["model"], threshold=str(threshold), included=stream["included"])
                await apply_catalog(session, catalog if known else METER + catalog, as_of=NOV_1 - timedelta(days=1))
                await session.commit()
                customer_id, external_id = await subscribe(session, plan)
                used = Decimal(0)
                billed_so_far = 0
                for (minute, tokens), checked in zip(stream["events"], stream["checks"], strict=True):
                    at = NOV_1 + timedelta(minutes=minute)
                    await use(session, external_id, tokens, at)
                    used += tokens
                    if not checked:
                        continue
                    unbilled = round_to_minor(rate(terms, used), "USD") - billed_so_far
                    invoice = await check(session, customer_id, at + timedelta(seconds=30))
                    if unbilled >= stream["threshold"]:  # reached: billed at once, all of it
                        assert invoice is not None and invoice.total == unbilled
                        billed_so_far += unbilled
                    else:
                        assert invoice is None
                await billing.issue_next_invoice(session, customer_id, as_of=DEC_1 + timedelta(hours=2), window=WINDOW)
                await session.commit()
                billed = await usage_billed(session, customer_id)
                interims = [(sequence, usage) for kind, sequence, usage in billed if kind == "interim"]
                assert [sequence for sequence, _ in interims] == list(range(1, len(interims) + 1))
                assert all(usage >= stream["threshold"] for _, usage in interims)
                assert [kind for kind, _, _ in billed] == ["opening"] + ["interim"] * len(interims) + ["period"]
                # Never a unit billed twice nor missed: the whole period, rated once on all its usage.
                assert sum(usage for _, _, usage in billed) == round_to_minor(rate(terms, used), "USD")
        finally:
            await engine.dispose()

    asyncio.run(scenario())
