"""Plan changes, worked out by hand: upgrade, downgrade and a new version of the same plan,
immediately and at the period's end; dry runs; idempotency; bad input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices.plan_changes import change_plan
from customers.errors import InvalidInput, PlanNotFound
from customers.subscriptions import PlanChangeOutcome, PlanChangeRequest
from ledger import service as ledger
from ledger.errors import IdempotencyKeyReused
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, invoices_of, lines_of, send_calls, subscribe

MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)  # a 31-day period: [Mar 1, Apr 1)
APR_1 = datetime(2026, 4, 1, tzinfo=UTC)
MAR_16 = datetime(2026, 3, 16, tzinfo=UTC)  # 15 days used, 16 of 31 remaining


async def change(
    session: AsyncSession,
    customer_id: uuid.UUID,
    plan: str,
    timing: str = "IMMEDIATELY",
    *,
    key: str = "change-1",
    at: datetime | None = None,
    as_of: datetime = MAR_16,
    dry_run: bool = False,
) -> PlanChangeOutcome:
    request = PlanChangeRequest(customer_id, plan, timing, key, actor="test", at=at)
    outcome = await change_plan(session, request, as_of=as_of, dry_run=dry_run)
    await session.commit()
    return outcome


def amounts(outcome: PlanChangeOutcome) -> list[Decimal]:
    return [p.amount for p in outcome.prorations]


async def test_an_immediate_upgrade_prorates_fees_and_rates_each_part_of_the_usage_on_its_plan(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await send_calls(session, "acme", 100, datetime(2026, 3, 5, tzinfo=UTC))
    outcome = await change(session, customer_id, "plus")
    # Unused basic fee: -10 x 16/31 = -5.1612...; the rest of the period on plus: 40 x 16/31 = 20.6451...
    assert amounts(outcome) == [Decimal(-10) * 16 / 31, Decimal(40) * 16 / 31]
    await send_calls(session, "acme", 200, datetime(2026, 3, 20, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    assert await lines_of(session, closing.id) == [
        # Basic for 15 of 31 days: 100 included x 15/31 = 48.387..., so 51.612... x 0.10 = 5.16.
        ("usage", "API calls from 2026-03-01 to 2026-03-16 (region=eu)", 100, 516),
        # Plus from the change on: 200 x 0.05 = 10.00.
        ("usage", "API calls from 2026-03-16 to 2026-04-01 (region=eu)", 200, 1000),
        ("proration", "Unused time on Basic v1 (2026-03-16 00:00 UTC to 2026-04-01 00:00 UTC)", None, -516),
        ("proration", "Remaining time on Plus v1 (2026-03-16 00:00 UTC to 2026-04-01 00:00 UTC)", None, 2065),
        ("base_fee", "Plus v1 base fee, 2026-04-01 to 2026-05-01", 1, 4000),
    ]
    assert closing.total == 516 + 1000 - 516 + 2065 + 4000


async def test_an_immediate_downgrade_that_leaves_a_negative_invoice_becomes_credit(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "plus", MAR_1)
    await run_billing(sessions, settings, as_of=MAR_1 + timedelta(minutes=1))  # 40.00 in advance
    outcome = await change(session, customer_id, "basic", at=datetime(2026, 3, 2, tzinfo=UTC))
    # 30 of 31 days remain: -40 x 30/31 = -38.709... -> -38.71; 10 x 30/31 = 9.677... -> 9.68.
    assert [round(a, 2) for a in amounts(outcome)] == [Decimal("-38.71"), Decimal("9.68")]
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    # -38.71 + 9.68 + April's basic fee 10.00 = -19.03: nothing due, 19.03 of credit kept.
    assert (closing.total, closing.amount_due, closing.status) == (-1903, 0, "paid")
    balances = await ledger.balances(session, customer_id, "USD")
    assert (balances.credits, balances.outstanding) == (1903, 4000)


async def test_a_new_version_of_the_same_plan_prorates_the_fee_difference(
    session: AsyncSession, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await apply_catalog(session, CATALOG.replace('base_fee = "10.00"', 'base_fee = "12.00"'), as_of=MAR_1)
    await session.commit()
    outcome = await change(session, customer_id, "basic")
    assert amounts(outcome) == [Decimal(-10) * 16 / 31, Decimal(12) * 16 / 31]
    assert outcome.change is not None
    assert outcome.change.from_plan_version_id != outcome.change.to_plan_version_id


async def test_a_change_at_the_period_end_is_scheduled_and_bills_the_next_fee_on_the_new_plan(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    outcome = await change(session, customer_id, "plus", "PERIOD_END")
    assert (outcome.prorations, outcome.effective_at) == ([], APR_1)
    assert outcome.subscription.version_at(MAR_16) != outcome.subscription.version_at(APR_1)
    await send_calls(session, "acme", 150, datetime(2026, 3, 20, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    # March is all basic: (150 - 100) x 0.10 = 5.00; April's fee is plus's 40.00.
    assert await lines_of(session, closing.id) == [
        ("usage", "API calls (region=eu)", 150, 500),
        ("base_fee", "Plus v1 base fee, 2026-04-01 to 2026-05-01", 1, 4000),
    ]


async def test_a_dry_run_returns_the_prorations_and_changes_nothing(
    session: AsyncSession, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    preview = await change(session, customer_id, "plus", dry_run=True)
    assert amounts(preview) == [Decimal(-10) * 16 / 31, Decimal(40) * 16 / 31]
    counts = (
        await session.execute(
            text("SELECT (SELECT count(*) FROM plan_changes), (SELECT count(*) FROM subscription_phases)")
        )
    ).one()
    assert tuple(counts) == (0, 1)


async def test_the_same_key_returns_the_first_change_and_another_request_is_refused(
    session: AsyncSession, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    first = await change(session, customer_id, "plus")
    again = await change(session, customer_id, "plus", as_of=MAR_16 + timedelta(seconds=5), at=MAR_16)
    assert first.change is not None and again.change is not None
    assert again.change.id == first.change.id and amounts(again) == amounts(first)
    with pytest.raises(IdempotencyKeyReused):
        await change(session, customer_id, "basic")
    await session.rollback()
    audit = (await session.execute(text("SELECT actor, timing, status FROM plan_changes"))).all()
    assert [tuple(row) for row in audit] == [("test", "IMMEDIATELY", "applied")]


@pytest.mark.parametrize(
    ("plan", "at", "error", "code", "field"),
    [
        ("gold", None, PlanNotFound, "NOT_FOUND", "planKey"),
        ("basic", None, InvalidInput, "SAME_VERSION", "planKey"),
        ("plus", APR_1, InvalidInput, "INVALID", "at"),
        ("plus", MAR_1 - timedelta(seconds=1), InvalidInput, "INVALID", "at"),
    ],
)
async def test_bad_changes_are_refused_naming_the_field_and_change_nothing(
    session: AsyncSession, billing_catalog: None, plan: str, at: datetime | None, error: type, code: str, field: str
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    with pytest.raises(error) as refused:
        await change(session, customer_id, plan, at=at)
    await session.rollback()
    assert (refused.value.code, refused.value.field) == (code, field)
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 0
