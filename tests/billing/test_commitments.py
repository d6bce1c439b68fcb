"""Commitments against the real database: the minimum spend true-up (plan-level and the
subscription's own, changed mid-period), and a prepaid commitment invoiced, drawn down by the
period invoices and expired to breakage. Every test ends with the ledger invariants checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices.commitments import (
    CommitmentRequest,
    MinimumSpendRequest,
    create_prepaid_commitment,
    minimum_spend_now,
    prepaid_commitments,
    set_minimum_spend,
)
from billing.invoices.minimum_spend import MinimumPart, period_minimum, true_up
from customers.service import NewCustomer, create_customer
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import TallyError
from pricing.catalog import parse_catalog
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, FEB_28, JAN_31, MAR_31, invoices_of, lines_of, send_calls, subscribe

FLOOR_PLAN = """
[[plans]]
key = "floor"
name = "Floor"
currency = "USD"
interval = "month"
base_fee = "10.00"
minimum_spend = "50.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"
  included = 100
"""
FEB_14 = datetime(2026, 2, 14, tzinfo=UTC)  # half of the period Jan 31 to Feb 28 (28 days)


@pytest.fixture
async def floor_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG + FLOOR_PLAN, as_of=JAN_31 - timedelta(days=30))
    await session.commit()


def test_the_period_minimum_is_each_parts_minimum_times_its_share() -> None:
    start, end = JAN_31, FEB_28
    assert period_minimum([MinimumPart(start, end, None)], start, end) is None
    halves = [MinimumPart(start, FEB_14, Decimal(50)), MinimumPart(FEB_14, end, Decimal(80))]
    assert period_minimum(halves, start, end) == Decimal(65)
    second_half = [MinimumPart(start, FEB_14, None), MinimumPart(FEB_14, end, Decimal(80))]
    assert period_minimum(second_half, start, end) == Decimal(40)
    assert true_up(Decimal(65), Decimal(15)) == Decimal(50)
    assert true_up(Decimal(65), Decimal(65)) == 0
    assert true_up(None, Decimal(0)) == 0


async def test_a_period_short_of_the_plans_minimum_gets_a_true_up_line(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, floor_catalog: None
) -> None:
    customer_id = await subscribe(session, "short", "floor", JAN_31)
    await send_calls(session, "short", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    _, february = await invoices_of(session, customer_id)
    # Spent: the period's base fee 10.00 (billed in advance) + (150 - 100) x 0.10 = 15.00; short by 35.00.
    assert await lines_of(session, february.id) == [
        ("usage", "API calls (region=eu)", 150, 500),
        ("minimum_spend", "Minimum spend true-up", None, 3500),
        ("base_fee", "Floor v1 base fee, 2026-02-28 to 2026-03-31", 1, 1000),
    ]
    assert february.total == 5000


async def test_a_period_that_spends_its_minimum_has_no_true_up(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, floor_catalog: None
) -> None:
    customer_id = await subscribe(session, "busy", "floor", JAN_31)
    await send_calls(session, "busy", 500, datetime(2026, 2, 10, tzinfo=UTC))  # 10.00 + 40.00: exactly 50.00
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    _, february = await invoices_of(session, customer_id)
    assert [kind for kind, *_ in await lines_of(session, february.id)] == ["usage", "base_fee"]


async def test_a_calendar_stub_owes_its_share_of_the_minimum_and_a_trial_owes_none(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, floor_catalog: None
) -> None:
    """Floor (10.00 a month, at least 50.00) from Feb 15 on the 1st: the stub to Mar 1 is half of
    February (14 of 28 days), so it pays 5.00 and owes 25.00, a true-up of 20.00 without usage.
    A 14-day trial from Jan 31 bills no fee and owes no minimum; its end starts the first period."""
    stub, trial = [
        await create_customer(
            session,
            NewCustomer(external_id=key, name=key, currency="USD", plan_key="floor", started_at=started, **extra),
            as_of=started,
        )
        for key, started, extra in (
            ("stub", datetime(2026, 2, 15, tzinfo=UTC), {"billing_anchor_day": 1}),
            ("trial", JAN_31, {"trial_days": 14}),
        )
    ]
    await session.commit()
    await run_billing(sessions, settings, as_of=datetime(2026, 3, 1, 1, tzinfo=UTC))
    opening, closing = await invoices_of(session, stub.id)
    assert [line[3] for line in await lines_of(session, opening.id)] == [500]
    assert await lines_of(session, closing.id) == [
        ("minimum_spend", "Minimum spend true-up", None, 2000),
        ("base_fee", "Floor v1 base fee, 2026-03-01 to 2026-04-01", 1, 1000),
    ]
    _, trial_end = await invoices_of(session, trial.id)
    assert await lines_of(session, trial_end.id) == [
        ("base_fee", "Floor v1 base fee, 2026-02-14 to 2026-03-14", 1, 1000),
    ]


async def test_the_subscriptions_own_minimum_from_mid_period_is_prorated_and_audited(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, floor_catalog: None
) -> None:
    customer_id = await subscribe(session, "mixed", "floor", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    request = MinimumSpendRequest(
        customer_id=customer_id,
        amount=Decimal("80"),
        effective_at=FEB_14,
        reason="contract amendment #7",
        idempotency_key="min-1",
        actor="staff:finance",
    )
    setting = await set_minimum_spend(session, request, as_of=JAN_31 + timedelta(days=1))
    await session.commit()
    again = await set_minimum_spend(session, request, as_of=JAN_31 + timedelta(days=2))
    assert again.id == setting.id, "a retry writes nothing more"
    with pytest.raises(TallyError) as reused:
        await set_minimum_spend(
            session, MinimumSpendRequest(**{**request.__dict__, "amount": Decimal(90)}), as_of=JAN_31
        )
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
    await session.rollback()
    now = await minimum_spend_now(session, customer_id, as_of=FEB_28)
    assert (now.amount, now.source, [s.actor for s in now.settings]) == (Decimal(80), "subscription", ["staff:finance"])

    await send_calls(session, "mixed", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    _, february = await invoices_of(session, customer_id)
    # Minimum: 50.00 for the first half, 80.00 for the second: 65.00. Spent 15.00: short by 50.00.
    assert ("minimum_spend", "Minimum spend true-up", None, 5000) in await lines_of(session, february.id)

    with pytest.raises(TallyError) as invoiced:
        await set_minimum_spend(
            session,
            MinimumSpendRequest(
                customer_id=customer_id,
                amount=None,
                effective_at=FEB_14,
                reason="too late",
                idempotency_key="min-2",
                actor="staff:finance",
            ),
            as_of=FEB_28 + timedelta(hours=2),
        )
    assert (invoiced.value.field, "invoiced" in invoiced.value.message) == ("effectiveAt", True)


async def test_a_prepaid_commitment_is_invoiced_drawn_down_and_what_is_left_expires(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, floor_catalog: None
) -> None:
    customer_id = await subscribe(session, "prepaid", "basic", JAN_31)
    request = CommitmentRequest(
        customer_id=customer_id,
        amount=Decimal("100.00"),
        currency="usd",
        starts_at=JAN_31,
        ends_at=MAR_31,
        idempotency_key="commit-1",
        actor="staff:finance",
    )
    window = timedelta(days=35)
    preview = await create_prepaid_commitment(session, request, as_of=JAN_31, backdate_limit=window, dry_run=True)
    assert (preview.commitment.amount, preview.invoice, preview.grant) == (10000, None, None)
    await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM invoices"))).scalar_one() == 0
    outcome = await create_prepaid_commitment(session, request, as_of=JAN_31, backdate_limit=window)
    await session.commit()
    assert outcome.invoice is not None and outcome.grant is not None
    invoice = outcome.invoice
    assert (invoice.kind, invoice.total, invoice.credits_applied, invoice.amount_due) == ("commitment", 10000, 0, 10000)
    assert await lines_of(session, invoice.id) == [
        ("commitment", "Prepaid commitment, 2026-01-31 to 2026-03-31", 1, 10000)
    ]
    assert (outcome.grant.source, outcome.grant.amount, outcome.grant.expires_at) == ("commitment", 10000, MAR_31)
    retry = await create_prepaid_commitment(session, request, as_of=JAN_31 + timedelta(hours=1), backdate_limit=window)
    assert retry.invoice is not None and retry.invoice.id == invoice.id
    balances = await ledger.balances(session, customer_id, "USD")
    assert (balances.credits, balances.outstanding) == (10000, 10000)

    # The opening fee (10.00) and February's usage and March's fee (5.00 + 10.00) draw it down.
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    await send_calls(session, "prepaid", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    _, opening, february = await invoices_of(session, customer_id)
    assert (opening.credits_applied, opening.amount_due) == (1000, 0)
    assert (february.credits_applied, february.amount_due) == (1500, 0)
    [(_, grant)] = await prepaid_commitments(session, customer_id, limit=10)
    assert grant is not None and grant.remaining == 7500

    assert await credit.expire_grants(session, as_of=MAR_31) == 1
    await session.commit()
    breakage = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = 'breakage'"
        )
    )
    assert breakage.scalar_one() == -7500, "what was left is recognized at the term's end"
    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))
    march = (await invoices_of(session, customer_id))[-1]
    assert (march.credits_applied, march.amount_due) == (0, march.total), "nothing left to draw"


def test_a_plan_without_a_minimum_keeps_the_pricing_document_it_had_before_minimums() -> None:
    """Versions made before minimums existed were hashed from this document: a new key in it
    would make every plan a new version at the next `catalog apply`."""
    [basic, _] = parse_catalog(CATALOG).plans
    assert set(basic.pricing_document()) == {"currency", "interval", "base_fee", "charges"}
    [floor] = parse_catalog(CATALOG + FLOOR_PLAN).plans[2:]
    assert floor.pricing_document()["minimum_spend"] == "50"


async def test_a_plan_without_a_minimum_keeps_its_version_when_the_catalog_is_applied_again(
    session: AsyncSession, floor_catalog: None
) -> None:
    versions = await session.execute(text("SELECT count(*) FROM plan_versions"))
    before = versions.scalar_one()
    await apply_catalog(session, CATALOG + FLOOR_PLAN, as_of=JAN_31)
    await apply_catalog(session, CATALOG + FLOOR_PLAN.replace('"50.00"', '"60.00"'), as_of=JAN_31)
    await session.commit()
    rows = (await session.execute(text("SELECT minimum_spend FROM plan_versions ORDER BY created_at"))).scalars().all()
    assert len(rows) == before + 1, "only the floor plan's changed minimum makes a new version"
    assert rows.count(None) == 2 and Decimal(60) in rows
