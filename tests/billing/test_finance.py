"""Finance's actions on an unpaid invoice, against the real database: void (what it posted is
reversed, drawn credits go back to their grants), write-off to bad debt, retry now, refusals."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.collection import unpaid_invoices as finance
from ledger import service as ledger
from ledger.errors import InvalidInput
from tests.billing.scenario import JAN_31, opening_invoice
from tests.conftest import graphql

LATER = JAN_31 + timedelta(days=2)
VOID = """mutation($i: CloseInvoiceInput!) { voidInvoice(input: $i) {
  invoice { status amountDue { amount } } userErrors { field code message } } }"""


async def status_of(session: AsyncSession) -> tuple[str, str]:
    row = (
        await session.execute(
            text("SELECT i.status, o.status FROM invoices i JOIN collection_outbox o ON o.invoice_id = i.id")
        )
    ).one()
    return row[0], row[1]


async def test_voiding_reverses_the_charge_and_gives_the_drawn_credits_back(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = await opening_invoice(session, sessions, settings, credits=300)
    assert (invoice.credits_applied, invoice.amount_due) == (300, 700)
    voided = await finance.void_invoice(
        session, invoice.id, reason="billed by mistake", actor="fin", idempotency_key="v1", as_of=LATER
    )
    await session.commit()
    assert voided.status == "void" and await status_of(session) == ("void", "failed")
    balances = await ledger.balances(session, invoice.customer_id, "USD")
    assert (balances.credits, balances.outstanding) == (300, 0)
    again = await finance.void_invoice(  # the same request retried: its answer again, nothing more
        session, invoice.id, reason="billed by mistake", actor="fin", idempotency_key="v1", as_of=LATER
    )
    await session.commit()
    assert again.status == "void" and (await ledger.balances(session, invoice.customer_id, "USD")).credits == 300
    with pytest.raises(InvalidInput):  # a second void is refused: the invoice is no longer open
        await finance.void_invoice(session, invoice.id, reason="twice", actor="fin", idempotency_key="v2", as_of=LATER)
    await session.rollback()


async def test_writing_off_moves_what_is_due_to_bad_debt_once(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = await opening_invoice(session, sessions, settings)
    written = await finance.mark_uncollectible(
        session, invoice.id, reason="customer gone", actor="fin", idempotency_key="w1", as_of=LATER
    )
    await session.commit()
    assert written.status == "uncollectible" and await status_of(session) == ("uncollectible", "failed")
    assert (await ledger.balances(session, invoice.customer_id, "USD")).outstanding == 0
    bad_debt = (
        await session.execute(
            text(
                "SELECT sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id WHERE a.kind = 'bad_debt'"
            )
        )
    ).scalar_one()
    assert bad_debt == 1000
    again = await finance.mark_uncollectible(  # the same request retried: its answer again, nothing more
        session, invoice.id, reason="customer gone", actor="fin", idempotency_key="w1", as_of=LATER
    )
    await session.commit()
    assert again.status == "uncollectible"
    write_offs = (
        await session.execute(text("SELECT count(*) FROM ledger_transactions WHERE kind = 'write_off'"))
    ).scalar_one()
    assert write_offs == 1
    with pytest.raises(InvalidInput):  # another write-off of a closed invoice is refused
        await finance.mark_uncollectible(
            session, invoice.id, reason="again", actor="fin", idempotency_key="w2", as_of=LATER
        )
    await session.rollback()


async def test_retry_now_puts_the_collection_back_in_the_queue_and_refuses_a_paid_invoice(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = await opening_invoice(session, sessions, settings)
    await finance.retry_payment(session, invoice.id, as_of=LATER)
    await session.commit()
    due = (await session.execute(text("SELECT status, next_attempt_at FROM collection_outbox"))).one()
    assert tuple(due) == ("pending", LATER)
    await session.execute(text("UPDATE invoices SET status = 'paid'"))
    await session.commit()
    with pytest.raises(InvalidInput) as refused:
        await finance.retry_payment(session, invoice.id, as_of=LATER)
    assert refused.value.field == "invoiceId" and "paid" in refused.value.message
    await session.rollback()


async def test_only_finance_voids_through_graphql(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    billing_catalog: None,
    token_for,
) -> None:
    invoice = await opening_invoice(session, sessions, settings)
    variables = {"i": {"invoiceId": str(invoice.id), "reason": "duplicate", "idempotencyKey": "gv"}}
    support = (await graphql(client, await token_for("support"), VOID, variables)).json()
    assert support["data"] is None or support["data"]["voidInvoice"] is None
    done = (await graphql(client, await token_for("finance"), VOID, variables)).json()["data"]["voidInvoice"]
    assert done == {"invoice": {"status": "VOID", "amountDue": {"amount": "10.00"}}, "userErrors": []}
    unknown = {"i": {"invoiceId": str(uuid.uuid4()), "reason": "x", "idempotencyKey": "gu"}}
    missing = (await graphql(client, await token_for("finance"), VOID, unknown)).json()["data"]["voidInvoice"]
    assert missing["userErrors"][0]["code"] == "NOT_FOUND"
