"""Invoices and the billing run against the real database: amounts worked out by hand, the
opening and closing invoices, grace, re-runs, concurrent runs, a crash half-way, late usage and
credits. Every test ends with the ledger invariants checked (conftest)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window, run_billing
from app.settings import Settings
from billing.invoices import service as billing
from billing.invoices.invoicing import DraftInvoice, DraftLine, issue
from ledger import grants as credit
from ledger import service as ledger
from tests.billing.scenario import FEB_28, JAN_31, MAR_31, invoices_of, lines_of, opening_invoice, send_calls, subscribe


async def test_opening_then_closing_invoice_worked_out_by_hand(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    opening = await run_billing(sessions, settings, as_of=JAN_31 + timedelta(seconds=1))
    assert opening.invoices_issued == 1
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))

    inside_grace = await run_billing(sessions, settings, as_of=FEB_28 + timedelta(minutes=59))
    assert inside_grace.invoices_issued == 0
    closing = await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    assert closing.invoices_issued == 1

    first, second = await invoices_of(session, customer_id)
    # Opening: the first period's base fee in advance; a Jan 31 anchor ends the period on Feb 28.
    assert (first.kind, first.period_start, first.period_end) == ("opening", JAN_31, FEB_28)
    assert await lines_of(session, first.id) == [("base_fee", "Basic v1 base fee, 2026-01-31 to 2026-02-28", 1, 1000)]
    assert (first.total, first.amount_due, first.status) == (1000, 1000, "issued")
    # Closing: (150 - 100 included) x 0.10 = 5.00 in arrears, and March's fee (to Mar 31) in advance.
    assert (second.kind, second.period_start, second.period_end) == ("period", JAN_31, FEB_28)
    assert await lines_of(session, second.id) == [
        ("usage", "API calls (region=eu)", 150, 500),
        ("base_fee", "Basic v1 base fee, 2026-02-28 to 2026-03-31", 1, 1000),
    ]
    assert (second.total, second.amount_due, second.number) == (1500, 1500, first.number + 1)
    balances = await ledger.balances(session, customer_id, "USD")
    assert balances.outstanding == 2500


async def test_rerun_and_concurrent_runs_issue_each_invoice_once_with_gapless_numbers(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customers = [await subscribe(session, f"c{i}", "basic", JAN_31 + timedelta(hours=i)) for i in range(6)]
    as_of = MAR_31 + timedelta(hours=8)  # opening + two closed periods each
    reports = await asyncio.gather(*(run_billing(sessions, settings, as_of=as_of) for _ in range(3)))
    assert sum(r.invoices_issued for r in reports) == 18
    again = await run_billing(sessions, settings, as_of=as_of)
    assert again.invoices_issued == 0
    rows = (await session.execute(text("SELECT number, customer_id, kind, period_start FROM invoices"))).all()
    assert sorted(r.number for r in rows) == list(range(1, 19))
    assert len({(r.customer_id, r.kind, r.period_start) for r in rows}) == 18
    assert {r.customer_id for r in rows} == set(customers)


async def test_a_run_that_dies_half_way_is_finished_by_the_next(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    for i in range(5):
        await subscribe(session, f"c{i}", "basic", JAN_31)
    done: list[int] = []

    def crash_after_two(issued: list[Any]) -> None:
        done.append(len(issued))
        if len(done) == 2:
            raise RuntimeError("the billing host lost power")

    with pytest.raises(RuntimeError):
        await run_billing(
            sessions,
            settings.model_copy(update={"billing_concurrency": 1}),
            as_of=FEB_28 + timedelta(hours=2),
            on_customer_done=crash_after_two,
        )
    issued_before = (await session.execute(text("SELECT count(*) FROM invoices"))).scalar_one()
    assert issued_before == 4  # two customers, opening + closing each
    finished = await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=2))
    assert finished.invoices_issued == 6
    numbers = [n for (n,) in await session.execute(text("SELECT number FROM invoices ORDER BY number"))]
    assert numbers == list(range(1, 11))


async def test_an_invoice_that_fails_inside_its_transaction_leaves_nothing_behind(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    for i in range(4):
        await subscribe(session, f"c{i}", "basic", JAN_31)
    # The database fails c2's invoice after its ledger postings and its number were taken.
    await session.execute(
        text("""
        CREATE FUNCTION fail_c2() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF (SELECT external_id FROM customers WHERE id = NEW.customer_id) = 'c2' THEN
            RAISE EXCEPTION 'disk full';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER fail_c2 BEFORE INSERT ON invoices FOR EACH ROW EXECUTE FUNCTION fail_c2();
        """)
    )
    await session.commit()
    failing = await run_billing(
        sessions, settings.model_copy(update={"billing_concurrency": 1}), as_of=JAN_31 + timedelta(minutes=1)
    )
    assert failing.invoices_issued == 3, "the others are billed"
    assert list(failing.failed.values()) == ["RaiseException: disk full"]
    rows = (
        await session.execute(text("SELECT c.external_id FROM invoices i JOIN customers c ON c.id = i.customer_id"))
    ).all()
    assert "c2" not in {external_id for (external_id,) in rows}
    ledger_rows = (
        await session.execute(text("SELECT count(*) FROM ledger_transactions WHERE reason LIKE 'invoice%'"))
    ).scalar_one()
    assert ledger_rows == len(rows), "no ledger transaction without its invoice"
    await session.execute(text("DROP TRIGGER fail_c2 ON invoices"))
    await session.commit()
    finished = await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1), retry_failed=True)
    assert finished.invoices_issued == 4 - len(rows) == 1
    numbers = [n for (n,) in await session.execute(text("SELECT number FROM invoices ORDER BY number"))]
    assert numbers == [1, 2, 3, 4], "the failed invoice gave its number back"


async def test_late_usage_is_billed_on_the_next_invoice_naming_its_period(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    # 30 more February calls reach Tally on March 5, after February was invoiced.
    await send_calls(session, "acme", 30, datetime(2026, 2, 20, tzinfo=UTC), received=datetime(2026, 3, 5, tzinfo=UTC))
    await send_calls(session, "acme", 10, datetime(2026, 3, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))
    march = (await invoices_of(session, customer_id))[-1]
    assert march.period_start == FEB_28
    # February is re-rated on its own version: (180 - 100) x 0.10 = 8.00, of which 5.00 was billed.
    # March: 10 calls, all within the 100 included, shown at zero.
    assert await lines_of(session, march.id) == [
        ("usage", "API calls (region=eu)", 10, 0),
        ("late_usage", "Late usage for 2026-01-31 to 2026-02-28: API calls (region=eu)", 30, 300),
        ("base_fee", "Basic v1 base fee, 2026-03-31 to 2026-04-30", 1, 1000),
    ]
    # Nothing more arrived: the next invoice has no late usage again.
    await run_billing(sessions, settings, as_of=datetime(2026, 4, 30, 1, tzinfo=UTC))
    april = (await invoices_of(session, customer_id))[-1]
    assert [kind for kind, *_ in await lines_of(session, april.id)] == ["base_fee"]


@pytest.mark.parametrize(
    ("granted", "applied", "due", "status"),
    [(0, 0, 1000, "issued"), (300, 300, 700, "issued"), (2500, 1000, 0, "paid")],
)
async def test_credits_cover_none_part_or_all_of_an_invoice(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    granted: int,
    applied: int,
    due: int,
    status: str,
) -> None:
    opening = await opening_invoice(session, sessions, settings, credits=granted)
    customer_id = opening.customer_id
    assert (opening.total, opening.credits_applied, opening.amount_due, opening.status) == (1000, applied, due, status)
    balances = await ledger.balances(session, customer_id, "USD")
    assert (balances.credits, balances.outstanding) == (granted - applied, due)


async def test_an_issued_invoice_cannot_be_changed_or_deleted(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    for statement in (
        "UPDATE invoices SET total = 1",
        "DELETE FROM invoices",
        "UPDATE invoice_lines SET amount = 1",
        "DELETE FROM invoice_lines",
    ):
        with pytest.raises(DBAPIError):
            await session.execute(text(statement))
        await session.rollback()
    await session.execute(text("UPDATE invoices SET status = 'paid'"))
    await session.commit()


async def test_upcoming_invoice_previews_the_period_so_far_with_the_credits_that_would_apply(
    session: AsyncSession, settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 130, datetime(2026, 2, 10, tzinfo=UTC))
    await credit.grant_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=200,
        reason="welcome",
        actor="test",
        idempotency_key="welcome",
        as_of=JAN_31,
    )
    await session.commit()
    upcoming = await billing.upcoming_invoice(
        session, customer_id, as_of=datetime(2026, 2, 15, tzinfo=UTC), window=billing_window(settings)
    )
    assert upcoming is not None
    # (130 - 100) x 0.10 = 3.00 so far, and March's base fee of 10.00; 2.00 of credit would apply.
    assert [(line.kind, line.amount("USD")) for line in upcoming.draft.lines] == [("usage", 300), ("base_fee", 1000)]
    assert (upcoming.total, upcoming.credits_applied, upcoming.unbilled) == (1300, 200, 300)
    assert (await session.execute(text("SELECT count(*) FROM invoices"))).scalar_one() == 0


async def test_an_invoice_whose_lines_cancel_out_posts_nothing_and_is_paid(
    session: AsyncSession, billing_catalog: None
) -> None:
    """Usage of +5.00 and a late correction of -5.00: nothing moves in the ledger, the invoice is 0."""
    customer_id = await subscribe(session, "even", "basic", JAN_31)
    subscription_id = (
        await session.execute(text("SELECT id FROM subscriptions WHERE customer_id = :c"), {"c": customer_id})
    ).scalar_one()
    usage = {"service_start": JAN_31, "service_end": FEB_28}
    draft = DraftInvoice(
        customer_id,
        "USD",
        "period",
        JAN_31,
        FEB_28,
        [
            DraftLine(kind="usage", description="API calls", amount_exact=Decimal("5"), **usage),
            DraftLine(kind="late_usage", description="Late usage: API calls", amount_exact=Decimal("-5"), **usage),
        ],
        subscription_id=subscription_id,
    )
    invoice = await issue(session, draft, as_of=FEB_28 + timedelta(hours=1), invoiced_through=FEB_28)
    await session.commit()
    assert (invoice.total, invoice.amount_due, invoice.status, invoice.ledger_transaction_id) == (0, 0, "paid", None)
    assert [amount for *_, amount in await lines_of(session, invoice.id)] == [500, -500]
