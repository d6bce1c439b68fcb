"""``REFUND`` credit notes against a real localstripe: the refund goes out through the refund
outbox, is posted once whether the worker or the ``charge.refunded`` webhook reports it first, a
crash after Stripe refunded refunds nothing twice, and the ledger reconciles with Stripe after.

localstripe makes refunds by PaymentIntent with an amount and metadata, and computes the charge's
``amount_refunded``; it ignores idempotency keys and sends no ``charge.refunded`` webhook, so the
tests deliver that event themselves (signed like Stripe's) and the crash test relies on the
worker's lookup of the refund by its metadata, which is what covers a stand-in without keys."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.collection import stripe_gateway
from app.jobs import collect_invoices, process_stripe_events
from app.settings import Settings
from billing.collection.refunds import claim_next_refund
from billing.invoices.credit_notes import CreditNoteRequest, create_credit_note
from billing.reconciliation.service import reconcile
from ledger.errors import TallyError
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import CARD_SUCCEEDS, LocalStripe, billed_with_card, event_of, fixture_with, signed

PAID_AT = JAN_31 + timedelta(minutes=2)
CREDITED_AT = JAN_31 + timedelta(hours=1)
RECONCILED_AT = JAN_31 + timedelta(days=1)


def refund_of(invoice_id: Any, key: str, amount: str) -> CreditNoteRequest:
    return CreditNoteRequest(
        invoice_id=invoice_id,
        method="REFUND",
        reason="duplicate",
        idempotency_key=key,
        actor="finance@example.com",
        amount=Decimal(amount),
    )


async def paid_invoice(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe, name: str
) -> tuple[Any, Settings]:
    localstripe.flush()
    _, configured = await billed_with_card(session, sessions, settings, name, CARD_SUCCEEDS, localstripe)
    await collect_invoices(sessions, configured, as_of=PAID_AT)
    invoice_id, status = (await session.execute(text("SELECT id, status FROM invoices"))).one()
    assert status == "paid"
    return invoice_id, configured


async def refunds_posted(session: AsyncSession) -> tuple[int, int, int]:
    """(refund transactions, what ``refunds`` holds, what Tally says was refunded on the payment)."""
    row = await session.execute(
        text(
            "SELECT (SELECT count(*) FROM ledger_transactions WHERE kind = 'refund'), "
            "(SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            " WHERE a.kind = 'refunds'), (SELECT refunded FROM stripe_payments)"
        )
    )
    count, held, refunded = row.one()
    return int(count), int(held), int(refunded)


async def deliver_refund_event(
    stripe_app: httpx.AsyncClient, sessions: Any, configured: Settings, session: AsyncSession, refunded: int
) -> None:
    intent, charge = (await session.execute(text("SELECT payment_intent_id, charge_id FROM stripe_payments"))).one()
    obj = fixture_with(
        "charge", id=charge, payment_intent=intent, amount=1000, amount_refunded=refunded, currency="usd"
    )
    payload = event_of("charge.refunded", obj, f"evt_refunded_{refunded}")
    answer = await stripe_app.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": signed(payload)})
    assert answer.status_code == 200, answer.text
    await process_stripe_events(sessions, configured, as_of=CREDITED_AT + timedelta(minutes=5))


@pytest.mark.parametrize("webhook_first", [False, True])
async def test_a_refund_goes_to_the_card_once_and_reconciles(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    webhook_first: bool,
) -> None:
    invoice_id, configured = await paid_invoice(session, sessions, settings, localstripe, "org_refund")
    outcome = await create_credit_note(session, refund_of(invoice_id, "refund-1", "4.00"), as_of=CREDITED_AT)
    assert outcome.note.status == "refund_pending"
    note_id = outcome.note.id
    await session.commit()
    intent = (await session.execute(text("SELECT payment_intent_id FROM stripe_payments"))).scalar_one()
    if webhook_first:  # Stripe refunded (say a crashed worker's call) and told Tally before the worker did
        localstripe.client().v1.refunds.create(
            params={"payment_intent": intent, "amount": 400, "metadata": {"tally_credit_note_id": str(note_id)}}
        )
        await deliver_refund_event(stripe_app, sessions, configured, session, 400)
        await session.execute(
            text("UPDATE refund_outbox SET status = 'in_flight', attempts = 1, next_attempt_at = :at"),
            {"at": CREDITED_AT},
        )
        await session.commit()
    assert await collect_invoices(sessions, configured, as_of=CREDITED_AT + timedelta(minutes=10)) == 1
    refunds = localstripe.client().v1.refunds.list(params={"payment_intent": intent}).data
    assert [(r.amount, r.metadata.to_dict().get("tally_credit_note_id") if r.metadata else None) for r in refunds] == [
        (400, str(note_id))
    ]
    row = await session.execute(
        text(
            "SELECT n.status, o.status, o.stripe_refund_id FROM credit_notes n JOIN refund_outbox o ON o.credit_note_id = n.id"
        )
    )
    assert tuple(row.one()) == ("refunded", "refunded", refunds[0].id)
    assert await refunds_posted(session) == (1, 0, 400), "posted once; refunds back to zero: revenue given back once"
    if not webhook_first:
        await deliver_refund_event(stripe_app, sessions, configured, session, 400)  # the webhook, late: nothing new
        assert await refunds_posted(session) == (1, 0, 400)
    gateway = stripe_gateway(configured)
    assert gateway is not None
    report = await reconcile(session, gateway, as_of=RECONCILED_AT)
    assert [(d.kind, d.summary) for d in report.discrepancies] == [] and report.checked == 2


async def test_never_more_than_was_paid_and_not_yet_refunded(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    invoice_id, configured = await paid_invoice(session, sessions, settings, localstripe, "org_twice")
    await create_credit_note(session, refund_of(invoice_id, "r1", "6.00"), as_of=CREDITED_AT)
    await session.commit()
    with pytest.raises(TallyError) as refused:  # 6.00 is queued and not refunded yet: 4.00 is left
        await create_credit_note(session, refund_of(invoice_id, "r2", "4.01"), as_of=CREDITED_AT)
    await session.rollback()
    assert (refused.value.code, refused.value.field) == ("CREDIT_EXCEEDED", "amount")
    await collect_invoices(sessions, configured, as_of=CREDITED_AT)
    await create_credit_note(session, refund_of(invoice_id, "r3", "4.00"), as_of=CREDITED_AT)
    await session.commit()
    await collect_invoices(sessions, configured, as_of=CREDITED_AT)
    assert await refunds_posted(session) == (2, 0, 1000)
    assert await claim_next_refund(session, as_of=CREDITED_AT) is None
    gateway = stripe_gateway(configured)
    assert gateway is not None
    report = await reconcile(session, gateway, as_of=RECONCILED_AT)
    assert report.discrepancies == []


async def test_a_reduced_invoice_is_collected_for_the_rest_only_and_reconciles(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    localstripe.flush()
    _, configured = await billed_with_card(session, sessions, settings, "org_reduced", CARD_SUCCEEDS, localstripe)
    invoice_id = (await session.execute(text("SELECT id FROM invoices"))).scalar_one()
    reduce = CreditNoteRequest(
        invoice_id=invoice_id,
        method="REDUCE_DUE",
        reason="order_change",
        idempotency_key="reduce",
        actor="finance@example.com",
        amount=Decimal("3.00"),
    )
    await create_credit_note(session, reduce, as_of=JAN_31 + timedelta(minutes=1))
    await session.commit()
    assert await collect_invoices(sessions, configured, as_of=PAID_AT) == 1
    paid = await session.execute(
        text("SELECT i.status, p.amount FROM invoices i JOIN stripe_payments p ON p.invoice_id = i.id")
    )
    assert tuple(paid.one()) == ("paid", 700), "Stripe charged the 7.00 still due, not the 10.00 invoiced"
    gateway = stripe_gateway(configured)
    assert gateway is not None
    report = await reconcile(session, gateway, as_of=RECONCILED_AT)
    assert report.discrepancies == []
