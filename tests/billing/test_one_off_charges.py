"""One-off charges against the real database: invoiced at once on their own invoice, or claimed by
exactly one period invoice (concurrent billing runs and a concurrent cancel included), canceled
while pending. Every test ends with the ledger invariants checked (conftest)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.database import in_transaction
from app.settings import Settings
from billing.invoices import repository as billing_repository
from billing.invoices.invoicing import issue, next_due
from billing.invoices.one_off import OneOffChargeRequest, cancel_one_off_charge, create_one_off_charge
from customers.service import NewCustomer, create_customer
from customers.subscriptions import phases_of
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import TallyError
from tests.billing.scenario import FEB_28, JAN_31, MAR_31, invoices_of, lines_of, send_calls, subscribe

FEB_10 = datetime(2026, 2, 10, tzinfo=UTC)


def charge(customer_id: uuid.UUID, key: str, *, timing: str = "now", **changes: object) -> OneOffChargeRequest:
    fields: dict[str, object] = {
        "customer_id": customer_id,
        "description": "Onboarding workshop",
        "quantity": Decimal("3"),
        "unit_price": Decimal("150.005"),
        "currency": "USD",
        "timing": timing,
        "idempotency_key": key,
        "actor": "staff:test",
    }
    return OneOffChargeRequest(**{**fields, **changes})  # type: ignore[arg-type]


async def system_balance(session: AsyncSession, kind: str) -> int:
    found = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind AND a.customer_id IS NULL"
        ),
        {"kind": kind},
    )
    return int(found.scalar_one())


async def test_a_charge_now_is_its_own_invoice_for_a_customer_without_a_subscription(session: AsyncSession) -> None:
    customer = await create_customer(
        session, NewCustomer(external_id="walk-in", name="Walk-in", currency="USD"), as_of=JAN_31
    )
    await session.commit()
    outcome = await create_one_off_charge(session, charge(customer.id, "k1"), as_of=FEB_10)
    await session.commit()

    invoice = outcome.invoice
    assert invoice is not None
    # 3 x 150.005 = 450.015, rounded once, half away from zero: 450.02.
    assert (invoice.kind, invoice.total, invoice.amount_due, invoice.status) == ("one_off", 45002, 45002, "issued")
    assert (invoice.period_start, invoice.period_end) == (FEB_10, FEB_10)
    assert await lines_of(session, invoice.id) == [("one_off", "Onboarding workshop", Decimal(3), 45002)]
    assert (outcome.charge.status, outcome.charge.invoice_id, outcome.charge.amount) == ("invoiced", invoice.id, 45002)
    assert (await ledger.balances(session, customer.id, "USD")).outstanding == 45002
    assert await system_balance(session, "one_off_revenue") == -45002
    queued = await session.execute(
        text("SELECT count(*) FROM collection_outbox WHERE invoice_id = :id"), {"id": invoice.id}
    )
    assert queued.scalar_one() == 1, "collected like any invoice"

    again = await create_one_off_charge(session, charge(customer.id, "k1"), as_of=FEB_10 + timedelta(minutes=5))
    await session.commit()
    assert again.invoice is not None and again.invoice.id == invoice.id, "a retry returns the first charge"
    second = await create_one_off_charge(session, charge(customer.id, "k2"), as_of=FEB_10)
    await session.commit()
    assert second.invoice is not None and second.invoice.number == invoice.number + 1, "same moment, own invoice"
    assert (await session.execute(text("SELECT count(*) FROM invoices"))).scalar_one() == 2


async def test_a_charge_now_draws_credits_like_any_invoice(session: AsyncSession, billing_catalog: None) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await credit.grant_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=10000,
        reason="welcome",
        actor="test",
        idempotency_key="welcome",
        as_of=JAN_31,
    )
    await session.commit()
    preview = await create_one_off_charge(session, charge(customer_id, "k"), as_of=FEB_10, dry_run=True)
    assert (preview.charge.amount, preview.credits_applied, preview.amount_due, preview.invoice) == (
        45002,
        10000,
        35002,
        None,
    )
    await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM one_off_charges"))).scalar_one() == 0
    outcome = await create_one_off_charge(session, charge(customer_id, "k"), as_of=FEB_10)
    await session.commit()
    assert outcome.invoice is not None
    assert (outcome.invoice.credits_applied, outcome.invoice.amount_due) == (10000, 35002), "as the dry run said"


async def test_a_charge_for_the_next_invoice_is_billed_once_by_concurrent_billing_runs(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    pending = await create_one_off_charge(session, charge(customer_id, "k", timing="next_invoice"), as_of=FEB_10)
    await session.commit()
    assert (pending.charge.status, pending.invoice) == ("pending", None)
    await send_calls(session, "acme", 150, FEB_10)

    reports = await asyncio.gather(
        *(run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1)) for _ in range(3))
    )
    assert sum(report.invoices_issued for report in reports) == 1
    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))

    _, february, march = await invoices_of(session, customer_id)
    assert await lines_of(session, february.id) == [
        ("usage", "API calls (region=eu)", 150, 500),
        ("one_off", "Onboarding workshop", 3, 45002),
        ("base_fee", "Basic v1 base fee, 2026-02-28 to 2026-03-31", 1, 1000),
    ]
    assert february.total == 500 + 45002 + 1000
    assert [kind for kind, *_ in await lines_of(session, march.id)] == ["base_fee"], "billed exactly once"
    [(status, invoice_id)] = (await session.execute(text("SELECT status, invoice_id FROM one_off_charges"))).all()
    assert (status, invoice_id) == ("invoiced", february.id)
    assert await system_balance(session, "one_off_revenue") == -45002
    assert await system_balance(session, "usage_revenue") == -500


async def test_a_charge_canceled_while_pending_is_never_billed(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    pending = await create_one_off_charge(session, charge(customer_id, "k", timing="next_invoice"), as_of=FEB_10)
    await session.commit()
    canceled = await cancel_one_off_charge(
        session,
        charge_id=pending.charge.id,
        reason="sold by mistake",
        actor="staff:test",
        idempotency_key="c1",
        as_of=FEB_10,
    )
    await session.commit()
    assert (canceled.status, canceled.canceled_by, canceled.cancel_reason) == (
        "canceled",
        "staff:test",
        "sold by mistake",
    )
    again = await cancel_one_off_charge(
        session,
        charge_id=pending.charge.id,
        reason="sold by mistake",
        actor="staff:test",
        idempotency_key="c1",
        as_of=FEB_10,
    )
    assert again.id == canceled.id, "a retried cancel returns the canceled charge"
    with pytest.raises(TallyError) as refused:
        await cancel_one_off_charge(
            session, charge_id=pending.charge.id, reason="again", actor="staff:test", idempotency_key="c2", as_of=FEB_10
        )
    assert (refused.value.code, refused.value.field) == ("NOT_PENDING", "chargeId")
    await session.rollback()

    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    for invoice in await invoices_of(session, customer_id):
        assert "one_off" not in [kind for kind, *_ in await lines_of(session, invoice.id)]

    now = await create_one_off_charge(session, charge(customer_id, "k-now"), as_of=FEB_28 + timedelta(hours=2))
    await session.commit()
    cursor = await session.execute(text("SELECT invoiced_through FROM subscriptions"))
    assert cursor.scalar_one() == FEB_28, "an invoice outside the periods leaves the billing cursor where it was"
    with pytest.raises(TallyError) as invoiced:
        await cancel_one_off_charge(
            session, charge_id=now.charge.id, reason="oops", actor="staff:test", idempotency_key="c3", as_of=FEB_10
        )
    assert invoiced.value.code == "NOT_PENDING" and "credit the customer" in invoiced.value.message


async def test_a_cancel_racing_the_invoice_that_claims_the_charge_loses_or_wins_whole(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    """Billing locks the pending charges it bills: a concurrent cancel either comes first (the
    charge is not billed) or waits and finds it invoiced; never both, never neither."""
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    pending = await create_one_off_charge(session, charge(customer_id, "k", timing="next_invoice"), as_of=FEB_10)
    await session.commit()

    async def cancel() -> str:
        async with sessions() as own:
            try:
                await in_transaction(
                    own,
                    lambda: cancel_one_off_charge(
                        own,
                        charge_id=pending.charge.id,
                        reason="race",
                        actor="staff:test",
                        idempotency_key="race",
                        as_of=FEB_28,
                    ),
                )
            except TallyError as error:
                return error.code
            return "canceled"

    cancel_outcome, report = await asyncio.gather(
        cancel(), run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    )
    assert report.invoices_issued == 1 and not report.failed
    [february] = [i for i in await invoices_of(session, customer_id) if i.kind == "period"]
    billed = "one_off" in [kind for kind, *_ in await lines_of(session, february.id)]
    [status] = (await session.execute(text("SELECT status FROM one_off_charges"))).scalars().all()
    assert (cancel_outcome, status, billed) in {("canceled", "canceled", False), ("NOT_PENDING", "invoiced", True)}


async def test_an_invoice_being_composed_holds_its_pending_charges_against_a_cancel(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    """Between composing the invoice and claiming its charges, a cancel must wait (here: time out),
    not slip in and make the invoice bill a canceled charge or fail."""
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    pending = await create_one_off_charge(session, charge(customer_id, "k", timing="next_invoice"), as_of=FEB_10)
    await session.commit()
    as_of = FEB_28 + timedelta(hours=1)
    async with sessions() as billing_session:
        [subscription] = await billing_repository.subscriptions_to_bill(billing_session, customer_id)
        phases = await phases_of(billing_session, subscription.id)
        due = await next_due(
            billing_session,
            subscription,
            phases,
            "USD",
            as_of=as_of,
            grace=timedelta(hours=1),
            late_window=timedelta(0),
        )
        assert due is not None and due.draft.one_off_charge_ids == (pending.charge.id,)
        async with sessions() as other:
            await other.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                await cancel_one_off_charge(
                    other, charge_id=pending.charge.id, reason="late", actor="t", idempotency_key="late", as_of=as_of
                )
            await other.rollback()
        invoice = await issue(billing_session, due.draft, as_of=as_of, invoiced_through=due.invoiced_through)
        await billing_session.commit()
    assert ("one_off", "Onboarding workshop", 3, 45002) in await lines_of(session, invoice.id)
