"""Cancel, resume, pause and unpause, billed: examples worked out by hand (November 2026 has 30
days, December 31), what ingestion and entitlements answer meanwhile, and every refusal a field
error that writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices.plan_changes import change_plan
from billing.invoices.service import due_customers
from customers.errors import InvalidInput
from customers.lifecycle import CANCEL, PAUSE, RESUME, UNPAUSE
from customers.service import subscriptions_of
from customers.subscriptions import PlanChangeRequest
from ledger.errors import TallyError
from ledger.verify import verify
from metering.entitlements import entitlement
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import CATALOG, WINDOW, all_lines, bill, lifecycle, send_calls, subscribe

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC)


def nov(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


@pytest.fixture
async def lifecycle_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=NOV_1 - timedelta(days=60))
    await session.commit()


def amounts(lines: list) -> list[tuple[str, str, int]]:  # type: ignore[type-arg]
    return [(line.kind, line.description, line.amount) for line in lines]


async def test_an_immediate_cancel_issues_the_final_invoice_at_once_and_nothing_after_it(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """Hundred (100.00, calls at 0.10) from Nov 1; 10 calls on Nov 5; canceled on Nov 16, 15 of
    30 days unused: the final invoice bills the calls, 1.00, and credits -100 × 15/30 = -50.00."""
    customer_id = await subscribe(session, "quits", "hundred", NOV_1)
    await bill(session, customer_id, NOV_1)
    await send_calls(session, "quits", 10, nov(5))
    preview = await lifecycle(session, customer_id, CANCEL, as_of=nov(16), timing="IMMEDIATELY", dry_run=True)
    outcome = await lifecycle(
        session, customer_id, CANCEL, as_of=nov(16), timing="IMMEDIATELY", reason="moving on", key="quit-1"
    )
    expected = [
        ("usage", "API calls from 2026-11-01 to 2026-11-16", 100),
        ("proration", "Unused time on Hundred v1 (2026-11-16 00:00 UTC to 2026-12-01 00:00 UTC)", -5000),
    ]
    assert preview.final_invoice is not None and outcome.final_invoice is not None
    currency = "USD"
    assert [(x.kind, x.description, x.amount(currency)) for x in preview.final_invoice.draft.lines] == expected
    assert preview.issued == [] and preview.event is None
    [final] = outcome.issued
    assert (final.total, final.amount_due) == (-4900, 0), "the credit is kept as the customer's credits"
    assert amounts(await all_lines(session, customer_id))[1:] == expected
    assert outcome.event is not None and (outcome.event.reason, outcome.event.actor) == ("moving on", "test")

    subscription = (await subscriptions_of(session, [customer_id]))[customer_id]
    assert (subscription.cancel_at, subscription.canceled_at, subscription.cancel_reason) == (
        nov(16),
        nov(16),
        "moving on",
    )
    refused = await send_calls(session, "quits", 3, nov(20))
    assert [r.code for r in refused.rejected] == ["SUBSCRIPTION_CANCELED"] * 3
    late = await send_calls(session, "quits", 4, nov(10), received=nov(17))
    assert late.accepted == 4, "usage before the cancel is kept, though never billed after the final invoice"
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=nov(17))
    assert found is not None and (found.allowed, found.reason) == (False, "SUBSCRIPTION_CANCELED")

    await bill(session, customer_id, JAN_1 + timedelta(days=20))
    assert len(await all_lines(session, customer_id)) == 3, "no invoice after the final one"
    again = await lifecycle(
        session, customer_id, CANCEL, as_of=nov(18), timing="IMMEDIATELY", reason="moving on", key="quit-1"
    )
    assert [i.id for i in again.issued] == [final.id], "a retry answers the first outcome and issues nothing"
    with pytest.raises(TallyError) as reused:
        await lifecycle(session, customer_id, CANCEL, as_of=nov(18), timing="PERIOD_END", key="quit-1")
    assert (reused.value.code, reused.value.field) == ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    assert await verify(session) == []


async def test_a_cancel_in_grace_issues_the_closed_period_first_then_the_final_invoice(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """Canceled 30 minutes into December, before November's invoice (the grace hour): November is
    invoiced first (with December's fee in advance), then December's final invoice credits it."""
    customer_id = await subscribe(session, "graceful", "hundred", NOV_1)
    await bill(session, customer_id, NOV_1)
    outcome = await lifecycle(session, customer_id, CANCEL, as_of=DEC_1 + timedelta(minutes=30), timing="IMMEDIATELY")
    assert [invoice.period_start for invoice in outcome.issued] == [NOV_1, DEC_1]
    lines = amounts(await all_lines(session, customer_id))
    unused = Decimal(100) * Decimal(31 * 24 * 60 - 30) / Decimal(31 * 24 * 60)
    assert lines[1] == ("base_fee", "Hundred v1 base fee, 2026-12-01 to 2027-01-01", 10000)
    assert lines[2][0] == "proration" and lines[2][2] == -round(unused * 100)


async def test_a_cancel_at_the_period_end_can_be_resumed_and_the_run_issues_its_final_invoice(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    customer_id = await subscribe(session, "leaving", "hundred", NOV_1)
    await bill(session, customer_id, NOV_1)
    scheduled = await lifecycle(session, customer_id, CANCEL, as_of=nov(10), timing="PERIOD_END", reason="budget")
    assert scheduled.effective_at == DEC_1 and scheduled.issued == [] and scheduled.prorations == []
    assert scheduled.final_invoice is not None
    assert [line.kind for line in scheduled.final_invoice.draft.lines] == [], "no usage yet, and no next fee"
    assert scheduled.subscription.cancel_at == DEC_1
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=nov(11))
    assert found is not None and found.allowed, "entitlements stop at the end, not before"

    resumed = await lifecycle(session, customer_id, RESUME, as_of=nov(12))
    assert resumed.subscription.cancel_at is None and resumed.subscription.cancel_reason is None
    statuses = await session.execute(text("SELECT kind, status FROM subscription_events ORDER BY requested_at"))
    assert list(statuses) == [("CANCEL", "revoked"), ("RESUME", "applied")]
    with pytest.raises(InvalidInput) as nothing:
        await lifecycle(session, customer_id, RESUME, as_of=nov(13))
    assert (nothing.value.code, nothing.value.field) == ("NOTHING_SCHEDULED", "customerId")

    await lifecycle(session, customer_id, CANCEL, as_of=nov(20), timing="PERIOD_END")
    await send_calls(session, "leaving", 5, nov(25))
    await bill(session, customer_id, DEC_1 + timedelta(minutes=30))
    assert len(await all_lines(session, customer_id)) == 1, "issued after the grace, as any period"
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert amounts(await all_lines(session, customer_id))[1:] == [("usage", "API calls", 50)], "no December fee"
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=DEC_1 + timedelta(hours=2))
    assert found is not None and (found.allowed, found.reason) == (False, "SUBSCRIPTION_CANCELED")
    await bill(session, customer_id, JAN_1 + timedelta(days=20))
    assert len(await all_lines(session, customer_id)) == 2
    with pytest.raises(InvalidInput) as too_late:
        await lifecycle(session, customer_id, RESUME, as_of=DEC_1 + timedelta(hours=3))
    assert (too_late.value.code, too_late.value.field) == ("SUBSCRIPTION_CANCELED", "customerId")


async def test_a_pause_credits_the_unused_fee_and_an_unpause_charges_the_rest(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """Paused Nov 11 to Nov 21: -100 × 20/30 = -66.67, then +100 × 10/30 = 33.33; the usage of the
    paused part is still billed (Hundred meters usage while paused)."""
    customer_id = await subscribe(session, "pauser", "hundred", NOV_1)
    await bill(session, customer_id, NOV_1)
    preview = await lifecycle(session, customer_id, PAUSE, as_of=nov(11), dry_run=True)
    paused = await lifecycle(session, customer_id, PAUSE, as_of=nov(11))
    assert [p.amount for p in preview.prorations] == [p.amount for p in paused.prorations]
    assert [(p.description, round(p.amount, 2)) for p in paused.prorations] == [
        ("Unused time on Hundred v1 (2026-11-11 00:00 UTC to 2026-12-01 00:00 UTC)", Decimal("-66.67"))
    ]
    assert paused.subscription.paused_at == nov(11)
    assert (await send_calls(session, "pauser", 10, nov(15))).accepted == 10
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=nov(15))
    assert found is not None and (found.allowed, found.reason) == (False, "SUBSCRIPTION_PAUSED")

    unpaused = await lifecycle(session, customer_id, UNPAUSE, as_of=nov(21))
    assert [round(p.amount, 2) for p in unpaused.prorations] == [Decimal("-66.67"), Decimal("33.33")]
    assert unpaused.subscription.paused_at is None
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=nov(22))
    assert found is not None and (found.allowed, found.reason) == (True, None)
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert amounts(await all_lines(session, customer_id))[1:] == [
        ("usage", "API calls from 2026-11-11 to 2026-11-21", 100),
        ("proration", "Unused time on Hundred v1 (2026-11-11 00:00 UTC to 2026-12-01 00:00 UTC)", -6667),
        ("proration", "Remaining time on Hundred v1 (2026-11-21 00:00 UTC to 2026-12-01 00:00 UTC)", 3333),
        ("base_fee", "Hundred v1 base fee, 2026-12-01 to 2027-01-01", 10000),
    ]


async def test_a_pause_across_a_period_end_bills_no_fee_in_advance_and_refuses_usage_if_the_plan_says(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """Strict (30.00, refuses usage while paused) paused Nov 16: -30 × 15/30 = -15.00, no fee in
    advance for December; unpaused Dec 16: +30 × 16/31 = 15.48 on December's invoice."""
    customer_id = await subscribe(session, "strict", "strict", NOV_1)
    await bill(session, customer_id, NOV_1)
    await lifecycle(session, customer_id, PAUSE, as_of=nov(16))
    refused = await send_calls(session, "strict", 2, nov(17))
    assert [r.code for r in refused.rejected] == ["SUBSCRIPTION_PAUSED"] * 2
    assert (await send_calls(session, "strict", 3, nov(10), received=nov(17))).accepted == 3
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert amounts(await all_lines(session, customer_id))[1:] == [
        ("usage", "API calls from 2026-11-01 to 2026-11-16", 300),
        ("proration", "Unused time on Strict v1 (2026-11-16 00:00 UTC to 2026-12-01 00:00 UTC)", -1500),
    ]
    await lifecycle(session, customer_id, UNPAUSE, as_of=datetime(2026, 12, 16, tzinfo=UTC))
    assert (await send_calls(session, "strict", 1, datetime(2026, 12, 17, tzinfo=UTC))).accepted == 1
    await bill(session, customer_id, JAN_1 + timedelta(hours=2))
    assert amounts(await all_lines(session, customer_id))[3:] == [
        ("usage", "API calls from 2026-12-16 to 2027-01-01", 100),
        ("proration", "Remaining time on Strict v1 (2026-12-16 00:00 UTC to 2027-01-01 00:00 UTC)", 1548),
        ("base_fee", "Strict v1 base fee, 2027-01-01 to 2027-02-01", 3000),
    ]


async def test_a_plan_change_scheduled_before_a_cancel_is_dropped_and_one_made_while_paused_starts_paused(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    customer_id = await subscribe(session, "mover", "hundred", NOV_1)
    await bill(session, customer_id, NOV_1)
    await lifecycle(session, customer_id, PAUSE, as_of=nov(5))
    request = PlanChangeRequest(customer_id, "sixty", "IMMEDIATELY", "move-while-paused", actor="test", at=nov(8))
    outcome = await change_plan(session, request, as_of=nov(8))
    await session.commit()
    assert outcome.prorations[0].description.startswith("Unused time on Hundred v1 (2026-11-05")
    assert len(outcome.prorations) == 1, "paused on either plan: nothing charged for the rest of the period"
    scheduled = PlanChangeRequest(customer_id, "hundred", "PERIOD_END", "back-at-the-end", actor="test")
    await change_plan(session, scheduled, as_of=nov(9))
    await session.commit()
    await lifecycle(session, customer_id, CANCEL, as_of=nov(10), timing="PERIOD_END")
    statuses = await session.execute(text("SELECT idempotency_key, status FROM plan_changes ORDER BY requested_at"))
    assert list(statuses) == [("move-while-paused", "applied"), ("back-at-the-end", "canceled")]
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    kinds = [line.kind for line in await all_lines(session, customer_id)]
    assert kinds == ["base_fee", "proration"], "the final invoice: the credit of the pause, no next fee"


async def rows(session: AsyncSession) -> tuple[int, int, int]:
    counts = await session.execute(
        text(
            "SELECT (SELECT count(*) FROM subscription_events), (SELECT count(*) FROM subscription_phases), "
            "(SELECT count(*) FROM invoices)"
        )
    )
    found = counts.one()
    return (int(found[0]), int(found[1]), int(found[2]))


async def test_every_refusal_is_a_field_error_that_writes_nothing(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    active = await subscribe(session, "active", "hundred", NOV_1)
    canceled = await subscribe(session, "gone", "hundred", NOV_1)
    paused = await subscribe(session, "resting", "hundred", NOV_1)
    trying = await subscribe(session, "trying", "hundred", NOV_1, trial_days=14)
    await lifecycle(session, canceled, CANCEL, as_of=nov(3), timing="IMMEDIATELY")
    await lifecycle(session, paused, PAUSE, as_of=nov(3), key="rest")
    as_of = nov(10)
    refusals = [
        ("cancel twice", canceled, CANCEL, {"timing": "IMMEDIATELY"}, "ALREADY_CANCELED", "customerId"),
        ("resume a canceled one", canceled, RESUME, {}, "SUBSCRIPTION_CANCELED", "customerId"),
        ("resume with nothing scheduled", active, RESUME, {}, "NOTHING_SCHEDULED", "customerId"),
        ("pause a paused one", paused, PAUSE, {}, "ALREADY_PAUSED", "customerId"),
        ("pause a canceled one", canceled, PAUSE, {}, "SUBSCRIPTION_CANCELED", "customerId"),
        ("unpause an active one", active, UNPAUSE, {}, "NOT_PAUSED", "customerId"),
        ("pause a trial", trying, PAUSE, {}, "IN_TRIAL", "customerId"),
        ("unpause a canceled one", canceled, UNPAUSE, {}, "SUBSCRIPTION_CANCELED", "customerId"),
        ("a moment in the future", active, PAUSE, {"at": nov(11)}, "INVALID", "at"),
        ("a moment before the period", active, PAUSE, {"at": NOV_1 - timedelta(days=1)}, "INVALID", "at"),
        ("a moment at the start", active, PAUSE, {"at": NOV_1}, "INVALID", "at"),
        ("before the last change", paused, UNPAUSE, {"at": nov(2)}, "INVALID", "at"),
        (
            "past the backdating limit",
            active,
            PAUSE,
            {"at": nov(2), "backdate_limit": timedelta(days=7)},
            "INVALID",
            "at",
        ),
        ("a moment without offset", active, PAUSE, {"at": datetime(2026, 11, 5)}, "INVALID", "at"),
        ("a moment for PERIOD_END", active, CANCEL, {"timing": "PERIOD_END", "at": nov(5)}, "INVALID", "at"),
        ("no timing", active, CANCEL, {}, "INVALID", "timing"),
        ("a reason too long", active, CANCEL, {"timing": "PERIOD_END", "reason": "x" * 501}, "INVALID", "reason"),
        ("no key", active, PAUSE, {"key": " "}, "INVALID", "idempotencyKey"),
        (
            "a key reused for another request",
            active,
            PAUSE,
            {"key": "rest"},
            "IDEMPOTENCY_KEY_REUSED",
            "idempotencyKey",
        ),
        ("an unknown customer", uuid.uuid4(), PAUSE, {}, "NOT_FOUND", "customerId"),
    ]
    before = await rows(session)
    for label, customer_id, kind, options, code, field in refusals:
        with pytest.raises(TallyError) as refused:
            await lifecycle(session, customer_id, kind, as_of=as_of, **options)  # type: ignore[arg-type]
        assert (refused.value.code, refused.value.field) == (code, field), label
        assert await rows(session) == before, label
    change = PlanChangeRequest(canceled, "sixty", "IMMEDIATELY", "after-the-end", actor="test")
    with pytest.raises(InvalidInput) as refused:
        await change_plan(session, change, as_of=as_of)
    await session.rollback()
    assert (refused.value.code, refused.value.field) == ("SUBSCRIPTION_CANCELED", "customerId")
    back_dated = PlanChangeRequest(paused, "sixty", "IMMEDIATELY", "under-the-pause", actor="test", at=nov(2))
    with pytest.raises(InvalidInput) as refused:
        await change_plan(session, back_dated, as_of=as_of)
    await session.rollback()
    assert refused.value.field == "at", "a back-dated change may not slip under a pause"
    assert await rows(session) == before


async def test_a_pause_from_the_period_start_recorded_after_its_fee_was_billed_credits_the_fee_whole(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """December's 100.00 was billed in advance with November's invoice; a pause back-dated to
    Dec 1 00:00, asked for after that, credits it whole: December costs nothing."""
    customer_id = await subscribe(session, "rests-early", "hundred", NOV_1)
    await bill(session, customer_id, DEC_1 + timedelta(hours=1))
    paused = await lifecycle(session, customer_id, PAUSE, as_of=DEC_1 + timedelta(hours=2), at=DEC_1)
    assert [(p.kind, p.amount) for p in paused.prorations] == [("credit_unused", Decimal("-100.00"))]
    await bill(session, customer_id, JAN_1 + timedelta(hours=2))
    december = [line for line in await all_lines(session, customer_id) if DEC_1 <= line.service_start < JAN_1]
    assert sum(line.amount for line in december) == 0


async def test_a_canceled_subscription_invoiced_through_its_end_is_never_due_again(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """The billing run's selection leaves it out, so canceled customers cost the run nothing."""
    customer_id = await subscribe(session, "long-gone", "hundred", NOV_1)
    await lifecycle(session, customer_id, CANCEL, as_of=nov(3), timing="IMMEDIATELY")
    due = await due_customers(session, as_of=JAN_1 + timedelta(days=60), window=WINDOW)
    assert customer_id not in due


async def test_usage_accepted_before_a_back_dated_pause_of_a_refusing_plan_is_not_billed(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    """Strict refuses usage while paused: calls already accepted inside the paused part (the
    pause back-dated over them) are not billed either, as if refused."""
    customer_id = await subscribe(session, "strict-late", "strict", NOV_1)
    await send_calls(session, "strict-late", 2, nov(12))
    await lifecycle(session, customer_id, PAUSE, as_of=nov(13), at=nov(11))
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert [line.kind for line in await all_lines(session, customer_id)] == ["base_fee", "proration"]
