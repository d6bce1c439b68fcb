"""What Stripe's events do, against a real localstripe: payments that wait for the customer to
authenticate, refunds and disputes posted once, events in any order reaching the same state, and
the default card following Stripe. localstripe sends no event for refunds, disputes or
``requires_action``: those are built from Stripe's published example objects, made about the real
localstripe objects, and delivered signed to the webhook endpoint as Stripe would."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.collection import stripe_gateway
from app.jobs import collect_invoices, process_stripe_events
from app.settings import Settings
from billing.collection.outbox import claim_next
from billing.collection.stripe_gateway import attempt_already_made, charge_off_session
from ledger import service as ledger
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import (
    API_KEY,
    CARD_DECLINED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_SUCCEEDS,
    LocalStripe,
    billed_with_card,
    card_for,
    customer_status,
    event_of,
    fixture_with,
    invoice_status,
    outbox_and_attempts,
    signed,
)
from tests.conftest import graphql

PAID_AT = JAN_31 + timedelta(minutes=2)
WAITING = """query($id: ID!) { customerCollection(customerId: $id) {
  invoices { status attempts { status clientSecret } } } }"""


async def deliver(client: httpx.AsyncClient, kind: str, obj: dict[str, Any], event_id: str | None = None) -> None:
    payload = event_of(kind, obj, event_id or f"evt_{uuid.uuid4().hex}", created=int(time.time()))
    answer = await client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": signed(payload)})
    assert answer.status_code == 200, answer.text


def stripe_object(obj: Any) -> dict[str, Any]:
    """A localstripe object as the JSON an event would carry."""
    return dict(json.loads(str(obj)))


async def paid_invoice(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe, external_id: str
) -> tuple[uuid.UUID, Settings, str, str]:
    """A Basic customer's opening invoice (10.00) collected from a working card: (customer,
    settings, PaymentIntent, charge)."""
    customer_id, configured = await billed_with_card(
        session, sessions, settings, external_id, CARD_SUCCEEDS, localstripe
    )
    assert await collect_invoices(sessions, configured, as_of=PAID_AT) == 1
    intent, charge = (await session.execute(text("SELECT payment_intent_id, charge_id FROM stripe_payments"))).one()
    assert charge is not None, "the payment remembers its charge, for refunds and disputes"
    return customer_id, configured, intent, charge


async def clearing_balance(session: AsyncSession) -> int:
    """What Stripe clearing holds: Stripe owes Tally this much from its payments."""
    row = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = 'stripe_clearing'"
        )
    )
    return int(row.scalar_one())


async def amounts_of(session: AsyncSession, kind: str) -> list[int]:
    rows = await session.execute(
        text(
            "SELECT p.amount FROM ledger_postings p JOIN ledger_transactions t ON t.id = p.transaction_id "
            "JOIN ledger_accounts a ON a.id = p.account_id WHERE t.kind = :kind AND a.kind = 'stripe_clearing' "
            "ORDER BY t.recorded_at, p.amount"
        ),
        {"kind": kind},
    )
    return [-int(amount) for amount in rows.scalars()]


async def test_a_payment_that_needs_authentication_waits_for_the_customer_then_pays(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    token_for: Any,
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_3ds", CARD_NEEDS_AUTHENTICATION, localstripe
    )
    assert await collect_invoices(sessions, configured, as_of=PAID_AT) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox == [("action_required", 1, "the customer must authenticate the payment")]
    assert [a[:2] for a in attempts] == [(1, "requires_action")]
    assert await invoice_status(session) == "issued" and await customer_status(session, customer_id) == "ACTIVE"
    assert await collect_invoices(sessions, configured, as_of=PAID_AT + timedelta(days=1)) == 0, "no retry: it waits"

    intent_id = (await session.execute(text("SELECT payment_intent_id FROM payment_attempts"))).scalar_one()
    client = localstripe.client()
    waiting = stripe_object(client.v1.payment_intents.retrieve(intent_id))
    frontend_token = await token_for("customer", "org_3ds")
    shown = await graphql(stripe_app, frontend_token, WAITING, {"id": str(customer_id)})
    [invoice] = shown.json()["data"]["customerCollection"]["invoices"]
    assert invoice["status"] == "action_required"
    assert invoice["attempts"] == [{"status": "requires_action", "clientSecret": waiting["client_secret"]}]
    async with httpx.AsyncClient() as frontend:  # the customer completes 3-D Secure
        authenticated = await frontend.post(
            f"{localstripe.base}/v1/payment_intents/{intent_id}/_authenticate",
            data={"client_secret": waiting["client_secret"], "success": "true"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        authenticated.raise_for_status()
    succeeded = stripe_object(client.v1.payment_intents.retrieve(intent_id))
    await deliver(stripe_app, "payment_intent.succeeded", succeeded)
    await deliver(stripe_app, "payment_intent.requires_action", waiting)  # late, out of order
    assert await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(hours=2)) == 2
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 1) and [a[:2] for a in attempts] == [(1, "succeeded")]
    assert await invoice_status(session) == "paid"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0


async def test_refunds_made_in_stripe_are_posted_once_and_clearing_comes_back_to_zero(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe, stripe_app: httpx.AsyncClient
) -> None:
    _, configured, intent, charge = await paid_invoice(session, sessions, settings, localstripe, "org_refunds")
    client = localstripe.client()
    client.v1.refunds.create(params={"charge": charge, "amount": 400})

    def refunded_event(total: int) -> dict[str, Any]:
        return fixture_with(
            "charge", id=charge, payment_intent=intent, amount=1000, amount_refunded=total, currency="usd"
        )

    first = refunded_event(400)
    for _ in range(3):
        await deliver(stripe_app, "charge.refunded", first, "evt_refund_400")
    await deliver(stripe_app, "charge.refunded", first)  # Stripe sometimes sends an event twice, under two ids
    await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(days=1))
    assert await amounts_of(session, "refund") == [400]

    client.v1.refunds.create(params={"charge": charge, "amount": 600})  # the rest
    assert client.v1.charges.retrieve(charge).amount_refunded == 1000
    await deliver(stripe_app, "charge.refunded", refunded_event(1000))
    await deliver(stripe_app, "charge.refunded", first)  # the older total, arriving last
    await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(days=2))
    assert await amounts_of(session, "refund") == [400, 600]
    refunded = (await session.execute(text("SELECT refunded FROM stripe_payments"))).scalar_one()
    assert refunded == 1000
    assert await clearing_balance(session) == 0, "paid 10.00, refunded 10.00: nothing left in clearing"


async def test_a_dispute_is_posted_once_and_raises_an_anomaly(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe, stripe_app: httpx.AsyncClient
) -> None:
    customer_id, configured, _, charge = await paid_invoice(session, sessions, settings, localstripe, "org_dispute")
    dispute = fixture_with("dispute", charge=charge, amount=1000, currency="usd")  # names no PaymentIntent
    await deliver(stripe_app, "charge.dispute.created", dispute)
    await deliver(stripe_app, "charge.dispute.created", dispute)
    await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(days=3))
    assert await amounts_of(session, "dispute") == [1000]
    assert await clearing_balance(session) == 0
    anomalies = (
        await session.execute(text("SELECT kind, customer_id, severity, summary, numbers FROM anomalies"))
    ).all()
    assert [(a.kind, a.customer_id, a.severity) for a in anomalies] == [("DISPUTE", customer_id, "high")]
    assert dispute["id"] in anomalies[0].summary and anomalies[0].numbers["amount"] == 1000
    stored = (await session.execute(text("SELECT dispute_id, amount, reason FROM stripe_disputes"))).all()
    assert [tuple(row) for row in stored] == [(dispute["id"], 1000, dispute["reason"])]


@pytest.mark.parametrize("order", ["as sent", "reversed"])
async def test_a_failed_then_a_successful_attempt_reach_the_same_state_in_either_order(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    order: str,
) -> None:
    """Two attempts whose outcomes Tally learns only from Stripe's events (the worker made the
    calls and stopped before recording them)."""
    customer_id, configured = await billed_with_card(
        session, sessions, settings, f"org_order_{order[:2]}", CARD_DECLINED, localstripe
    )
    gateway = stripe_gateway(configured)
    assert gateway is not None
    async with sessions() as worker:
        claimed = await claim_next(worker, as_of=PAID_AT)
        assert claimed is not None
        await worker.commit()
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    declined_card = localstripe.client().v1.customers.retrieve(stripe_customer).invoice_settings
    assert declined_card is not None and declined_card.default_payment_method is not None
    attempts = []
    for number, card in ((1, str(declined_card.default_payment_method)), (2, None)):
        await charge_off_session(
            gateway,
            stripe_customer_id=stripe_customer,
            payment_method=card or card_for(localstripe, stripe_customer, CARD_SUCCEEDS),
            amount=1000,
            currency="USD",
            invoice_id=claimed.attempt.invoice_id,
            attempt=number,
        )
        made = await attempt_already_made(
            gateway, stripe_customer_id=stripe_customer, invoice_id=claimed.attempt.invoice_id, attempt=number
        )
        assert made is not None and made.payment_intent_id is not None
        attempts.append(stripe_object(localstripe.client().v1.payment_intents.retrieve(made.payment_intent_id)))
    events = [("payment_intent.payment_failed", attempts[0]), ("payment_intent.succeeded", attempts[1])]
    for kind, intent in events if order == "as sent" else reversed(events):
        await deliver(stripe_app, kind, intent)
        await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(minutes=1))
    outbox, recorded = await outbox_and_attempts(session)
    assert outbox[0][0] == "collected" and [a[:2] for a in recorded] == [(1, "failed"), (2, "succeeded")]
    assert await invoice_status(session) == "paid"
    assert await customer_status(session, customer_id) == "ACTIVE"
    assert await amounts_of(session, "payment") == [-1000]
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0


async def test_the_default_card_follows_stripe_whatever_order_the_events_come_in(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe, stripe_app: httpx.AsyncClient
) -> None:
    _, configured = await billed_with_card(session, sessions, settings, "org_cards", CARD_SUCCEEDS, localstripe)
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    client = localstripe.client()
    before = stripe_object(client.v1.customers.retrieve(stripe_customer))
    newer_card = card_for(localstripe, stripe_customer, CARD_SUCCEEDS)
    await deliver(stripe_app, "payment_method.attached", fixture_with("payment_method", customer=stripe_customer))
    await deliver(stripe_app, "customer.updated", before)  # an older state of the customer, arriving last
    await process_stripe_events(sessions, configured, as_of=PAID_AT)
    stored = (await session.execute(text("SELECT default_payment_method FROM stripe_customers"))).scalar_one()
    assert stored == newer_card


async def balance_of(session: AsyncSession, kind: str) -> int:
    row = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind"
        ),
        {"kind": kind},
    )
    return int(row.scalar_one())


@pytest.mark.parametrize("order", ["paid then failed", "failed then paid"])
async def test_a_payout_brings_clearing_back_to_zero_and_a_failed_one_returns_the_money(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    order: str,
) -> None:
    """localstripe only pays out in EUR: the payouts here are Stripe's example object, made about
    this payment's amount and currency, and delivered signed."""
    _, configured, _, _ = await paid_invoice(session, sessions, settings, localstripe, f"org_payout_{order[:4]}")
    assert await clearing_balance(session) == 1000, "Stripe holds the payment"
    paid = fixture_with("payout", id="po_tally_1", amount=1000, currency="usd", status="paid")
    failed = {**paid, "status": "failed", "failure_code": "could_not_process"}
    deliveries = [("payout.paid", paid), ("payout.paid", paid), ("payout.failed", failed)]
    if order == "failed then paid":
        deliveries.reverse()
    seen = []
    for kind, payout in deliveries:
        await deliver(stripe_app, kind, payout)
        await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(days=2))
        seen.append((await clearing_balance(session), await balance_of(session, "bank")))
    if order == "paid then failed":
        assert seen == [(0, 1000), (0, 1000), (1000, 0)], "paid once to the bank, then back with Stripe"
    else:
        assert seen == [(1000, 0)] * 3, "a payout known to have failed never leaves clearing"
