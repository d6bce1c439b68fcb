"""Plan changes billed whatever the order of changes and billing runs: two repros worked out by
hand (a change at a period's start recorded before that period's fee was billed; a back-dated
change before a later one), and a property: any sequence of changes bills each period exactly
the sum over its phases of fee × share."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, session_factory
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.service import BillingWindow
from customers.errors import InvalidInput
from customers.periods import period_containing
from customers.service import NewCustomer, create_customer, subscriptions_of
from customers.subscriptions import PlanChangeOutcome, PlanChangeRequest, phases_of
from pricing.proration import share_of_period
from pricing.service import apply_catalog, plan_version
from tests.billing.scenario import invoices_of, lines_of

WINDOW = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))
FEES = {"free": "0", "small": "50.00", "hundred": "100.00", "alpha": "249.95", "beta": "279.95", "big": "500.00"}
CATALOG = "\n".join(
    f'[[plans]]\nkey = "{key}"\nname = "{key.title()}"\ncurrency = "USD"\ninterval = "month"\nbase_fee = "{fee}"\n'
    for key, fee in FEES.items()
)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
async def fee_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=NOV_1 - timedelta(days=60))
    await session.commit()


async def subscribe(session: AsyncSession, external_id: str, plan: str, started_at: datetime) -> uuid.UUID:
    new = NewCustomer(external_id=external_id, name=external_id, currency="USD", plan_key=plan, started_at=started_at)
    customer = await create_customer(session, new, as_of=started_at)
    await session.commit()
    return customer.id


async def bill(session: AsyncSession, customer_id: uuid.UUID, as_of: datetime) -> None:
    """Every invoice of the customer due by ``as_of``, one committed transaction each (as a run)."""
    while await billing.issue_next_invoice(session, customer_id, as_of=as_of, window=WINDOW) is not None:
        await session.commit()
    await session.commit()


async def change(
    session: AsyncSession,
    customer_id: uuid.UUID,
    plan: str,
    *,
    at: datetime,
    as_of: datetime,
    timing: str = "IMMEDIATELY",
    dry_run: bool = False,
) -> PlanChangeOutcome:
    key = f"{customer_id}-{plan}-{at.isoformat()}-{as_of.isoformat()}-{timing}"
    request = PlanChangeRequest(customer_id, plan, timing, key, actor="test", at=at)
    try:
        return await change_plan(session, request, as_of=as_of, dry_run=dry_run)
    finally:
        if dry_run:
            await session.rollback()
        else:
            await session.commit()


def cents(outcome: PlanChangeOutcome) -> list[Decimal]:
    return [round(p.amount, 2) for p in outcome.prorations]


async def december_cost(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """What the customer was billed for December's base fee, prorations included, in cents."""
    total = 0
    for invoice in await invoices_of(session, customer_id):
        for line in (await billing.lines_of(session, [invoice.id]))[invoice.id]:
            if line.kind in ("base_fee", "proration") and DEC_1 <= line.service_start < JAN_1:
                total += line.amount
    return total


async def test_a_change_at_a_period_start_recorded_before_that_periods_fee_was_billed_is_billed_once(
    session: AsyncSession, fee_catalog: None
) -> None:
    """Alpha 249.95, beta 279.95; on alpha from Nov 1; in the grace hour after Nov 30, before the
    November invoice, a change to beta at Dec 1 00:00: December costs beta's 279.95, not 309.95."""
    customer_id = await subscribe(session, "early", "alpha", NOV_1)
    await bill(session, customer_id, NOV_1)  # the opening invoice: November on alpha
    in_grace = DEC_1 + timedelta(minutes=30)
    preview = await change(session, customer_id, "beta", at=DEC_1, as_of=in_grace, dry_run=True)
    outcome = await change(session, customer_id, "beta", at=DEC_1, as_of=in_grace)
    # December's fee is not billed yet: it will be billed at beta's fee, so nothing is prorated.
    assert cents(preview) == cents(outcome) == []
    await bill(session, customer_id, JAN_1 + timedelta(hours=2))
    invoices = await invoices_of(session, customer_id)
    assert [await lines_of(session, invoice.id) for invoice in invoices] == [
        [("base_fee", "Alpha v1 base fee, 2026-11-01 to 2026-12-01", 1, 24995)],
        [("base_fee", "Beta v1 base fee, 2026-12-01 to 2027-01-01", 1, 27995)],
        [("base_fee", "Beta v1 base fee, 2027-01-01 to 2027-02-01", 1, 27995)],
    ]
    assert await december_cost(session, customer_id) == 27995


async def test_the_same_change_recorded_after_that_periods_fee_was_billed_prorates_it_whole(
    session: AsyncSession, fee_catalog: None
) -> None:
    """The other order: December's alpha fee was billed first, so the change credits it whole
    (-249.95) and charges beta whole (+279.95): December still costs 279.95."""
    customer_id = await subscribe(session, "late", "alpha", NOV_1)
    await bill(session, customer_id, DEC_1 + timedelta(hours=1))  # opening + November, with December's alpha fee
    after_run = DEC_1 + timedelta(hours=2)
    preview = await change(session, customer_id, "beta", at=DEC_1, as_of=after_run, dry_run=True)
    outcome = await change(session, customer_id, "beta", at=DEC_1, as_of=after_run)
    assert cents(preview) == cents(outcome) == [Decimal("-249.95"), Decimal("279.95")]
    await bill(session, customer_id, JAN_1 + timedelta(hours=2))
    assert await december_cost(session, customer_id) == 27995


async def test_a_back_dated_change_prorates_against_the_plan_in_effect_at_its_moment(
    session: AsyncSession, fee_catalog: None
) -> None:
    """On 100.00 from Nov 6 (a 30-day period to Dec 6); to 500.00 at Nov 20; then, back-dated, to
    50.00 at Nov 10, which replaces the Nov 20 change. 26 of 30 days remain at Nov 10: the unused
    100.00 is -100 × 26/30 = -86.666… → -86.67, the rest on 50.00 is 50 × 26/30 = 43.333… → 43.33;
    with December's 50.00 in advance the period's invoice is 6.66."""
    nov_6, nov_10, nov_20 = (datetime(2026, 11, day, tzinfo=UTC) for day in (6, 10, 20))
    customer_id = await subscribe(session, "backdated", "hundred", nov_6)
    await bill(session, customer_id, nov_6)
    await change(session, customer_id, "big", at=nov_20, as_of=nov_20)
    preview = await change(session, customer_id, "small", at=nov_10, as_of=nov_20 + timedelta(days=1), dry_run=True)
    outcome = await change(session, customer_id, "small", at=nov_10, as_of=nov_20 + timedelta(days=1))
    assert cents(preview) == cents(outcome) == [Decimal("-86.67"), Decimal("43.33")]
    assert outcome.change is not None
    await bill(session, customer_id, datetime(2026, 12, 6, 2, tzinfo=UTC))
    closing = (await invoices_of(session, customer_id))[-1]
    assert await lines_of(session, closing.id) == [
        ("proration", "Unused time on Hundred v1 (2026-11-10 00:00 UTC to 2026-12-06 00:00 UTC)", None, -8667),
        ("proration", "Remaining time on Small v1 (2026-11-10 00:00 UTC to 2026-12-06 00:00 UTC)", None, 4333),
        ("base_fee", "Small v1 base fee, 2026-12-06 to 2027-01-06", 1, 5000),
    ]
    assert closing.total == 666


async def test_a_change_further_back_than_the_backdating_window_is_refused(
    session: AsyncSession, fee_catalog: None
) -> None:
    customer_id = await subscribe(session, "window", "hundred", NOV_1)
    request = PlanChangeRequest(
        customer_id, "big", "IMMEDIATELY", "too-old", actor="test", at=NOV_1 + timedelta(days=1)
    )
    with pytest.raises(InvalidInput) as refused:
        await change_plan(session, request, as_of=NOV_1 + timedelta(days=20), backdate_limit=timedelta(days=7))
    assert (refused.value.field, "TALLY_BACKDATE_MAX_DAYS" in refused.value.message) == ("at", True)


# The property. A step either bills the customer or changes their plan; time only moves forward.
step_strategy = st.one_of(
    st.tuples(st.just("bill"), st.integers(0, 12 * 24)),  # hours later
    st.tuples(
        st.just("change"),
        st.integers(0, 12 * 24),  # hours later
        st.sampled_from(sorted(FEES)),
        st.sampled_from(["IMMEDIATELY", "IMMEDIATELY", "PERIOD_END"]),
        # where in the current period it takes effect: its start, a share of the way to now, or now
        st.one_of(st.just("start"), st.just("now"), st.integers(1, 99)),
    ),
    st.tuples(st.just("boundary"), st.integers(0, 59)),  # to the next period's start + minutes (the grace hour)
)


def expected_subscription_amount(
    phases: list[Any], fees: dict[uuid.UUID, Decimal], anchor: datetime, invoiced_through: datetime
) -> Decimal:
    """Σ over closed periods of Σ over their phases of fee × share, plus the fee billed in advance
    for the open period (the version in effect at its start)."""

    def version_at(moment: datetime) -> uuid.UUID:
        return [phase for phase in phases if phase.starts_at <= moment][-1].plan_version_id

    total = Decimal(0)
    start, end = period_containing(anchor, "month", anchor)
    while end <= invoiced_through:
        moments = [start] + [phase.starts_at for phase in phases if start < phase.starts_at < end] + [end]
        for part_start, part_end in itertools.pairwise(moments):
            total += fees[version_at(part_start)] * share_of_period(part_start, part_end, start, end)
        start, end = end, period_containing(anchor, "month", end)[1]
    return total + fees[version_at(invoiced_through)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first_plan=st.sampled_from(sorted(FEES)), steps=st.lists(step_strategy, min_size=1, max_size=6))
def test_any_sequence_of_changes_and_runs_bills_each_period_its_phases_fees(
    database_url: str, first_plan: str, steps: list[tuple[Any, ...]]
) -> None:
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)

    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                if not await session.scalar(text("SELECT count(*) FROM plans")):
                    await apply_catalog(session, CATALOG, as_of=start - timedelta(days=1))
                    await session.commit()
                customer_id = await subscribe(session, f"p-{uuid.uuid4().hex[:10]}", first_plan, start)
                now = start
                last_outcome: dict[datetime, PlanChangeOutcome] = {}
                for step in steps:
                    if step[0] == "boundary":
                        now = period_containing(start, "month", now)[1] + timedelta(minutes=step[1])
                        continue
                    now += timedelta(hours=step[1])
                    if step[0] == "bill":
                        await bill(session, customer_id, now)
                        continue
                    _, _, plan, timing, where = step
                    period_start = period_containing(start, "month", now)[0]
                    at = {"start": period_start, "now": now}.get(where) or period_start + (now - period_start) * (
                        int(where) / 100
                    )
                    try:
                        preview = await change(
                            session, customer_id, plan, at=at, as_of=now, timing=timing, dry_run=True
                        )
                        outcome = await change(session, customer_id, plan, at=at, as_of=now, timing=timing)
                    except InvalidInput:
                        await session.rollback()
                        continue
                    assert preview.prorations == outcome.prorations  # the dry run agrees
                    if timing == "IMMEDIATELY":
                        last_outcome[period_start] = outcome
                await bill(session, customer_id, period_containing(start, "month", now)[1] + timedelta(hours=2))

                session.expunge_all()  # the billing cursor as the database has it now
                subscription = (await subscriptions_of(session, [customer_id]))[customer_id]
                assert subscription.invoiced_through is not None
                phases = await phases_of(session, subscription.id)
                fees = {
                    phase.plan_version_id: (await plan_version(session, phase.plan_version_id)).base_fee
                    for phase in phases
                }
                billed, prorated = Decimal(0), {}
                for invoice in await invoices_of(session, customer_id):
                    lines = (await billing.lines_of(session, [invoice.id]))[invoice.id]
                    billed += sum(
                        (line.amount_exact for line in lines if line.kind in ("base_fee", "proration")), Decimal(0)
                    )
                    if invoice.kind == "period":
                        prorated[invoice.period_start] = [x.amount_exact for x in lines if x.kind == "proration"]
                expected = expected_subscription_amount(phases, fees, start, subscription.invoiced_through)
                assert abs(billed - expected) < Decimal("1e-18"), (billed, expected)
                # What the last immediate change of a period said it would cost is what the period's invoice billed.
                for period_start, outcome in last_outcome.items():
                    assert prorated.get(period_start) == [p.amount for p in outcome.prorations]
        finally:
            await engine.dispose()

    asyncio.run(scenario())
