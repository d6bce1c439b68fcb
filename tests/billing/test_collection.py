"""Collection against a real localstripe (a stateful Stripe stand-in from PyPI, run here as a
server on a free port): a Stripe customer created on demand and stored once, SetupIntents for
the frontend, and refusals. localstripe ignores Idempotency-Key headers, so what Stripe itself
does with the keys Tally sends is not observable here; what Tally stores is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.collection import stripe_gateway
from app.jobs import collect_invoices
from app.main import create_app
from app.settings import Settings
from billing.collection.outbox import LEASE, charge, claim_next, payer_of
from ledger import service as ledger
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import (
    CARD_DECLINED,
    CARD_SUCCEEDS,
    LocalStripe,
    billed_with_card,
    card_for,
    customer_status,
    invoice_status,
    outbox_and_attempts,
)
from tests.conftest import graphql

SETUP = """mutation($i: CreateSetupIntentInput!) { createSetupIntent(input: $i) {
  setupIntentId clientSecret userErrors { field code message } } }"""
CREATE = """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }"""


@pytest.fixture
async def stripe_client(
    settings: Settings, database_url: str, localstripe: LocalStripe
) -> AsyncIterator[httpx.AsyncClient]:
    configured = localstripe.settings(settings)
    app: FastAPI = create_app(configured, database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def new_customer(client: httpx.AsyncClient, admin: str, external_id: str) -> str:
    variables = {"i": {"externalId": external_id, "name": "Acme", "currency": "USD", "email": "ap@acme.example"}}
    created = (await graphql(client, admin, CREATE, variables)).json()["data"]["createCustomer"]
    return str(created["customer"]["id"])


async def test_setup_intents_for_one_stripe_customer_created_on_demand(
    stripe_client: httpx.AsyncClient, token_for, session: AsyncSession, localstripe: LocalStripe
) -> None:
    admin = await token_for("admin")
    customer_id = await new_customer(stripe_client, admin, "org_cards")
    frontend = await token_for("customer", "org_cards")
    first = await graphql(stripe_client, frontend, SETUP, {"i": {"customerId": customer_id, "idempotencyKey": "a"}})
    second = await graphql(stripe_client, frontend, SETUP, {"i": {"customerId": customer_id, "idempotencyKey": "b"}})
    intents = [r.json()["data"]["createSetupIntent"] for r in (first, second)]
    assert [i["userErrors"] for i in intents] == [[], []]
    assert all(i["clientSecret"].startswith(i["setupIntentId"]) for i in intents)
    stored = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalars().all()
    assert len(stored) == 1, "one Stripe customer per Tally customer, however many cards are set up"
    client = localstripe.client()
    for intent in intents:
        assert client.v1.setup_intents.retrieve(intent["setupIntentId"]).customer == stored[0]
    on_stripe = client.v1.customers.retrieve(stored[0])
    assert (on_stripe.email, on_stripe.metadata["tally_customer_id"]) == ("ap@acme.example", customer_id)


async def test_a_customer_token_cannot_set_up_a_card_for_another_customer(
    stripe_client: httpx.AsyncClient, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    other = await new_customer(stripe_client, admin, "org_other")
    await new_customer(stripe_client, admin, "org_mine")
    mine = await token_for("customer", "org_mine")
    body = (await graphql(stripe_client, mine, SETUP, {"i": {"customerId": other, "idempotencyKey": "x"}})).json()
    assert body["data"]["createSetupIntent"]["userErrors"][0]["code"] == "NOT_FOUND"
    assert (await session.execute(text("SELECT count(*) FROM stripe_customers"))).scalar_one() == 0


async def test_without_a_stripe_key_collection_is_off(client: httpx.AsyncClient, token_for, catalog: None) -> None:
    admin = await token_for("admin")
    customer_id = await new_customer(client, admin, "org_nokey")
    body = (await graphql(client, admin, SETUP, {"i": {"customerId": customer_id, "idempotencyKey": "k"}})).json()
    [error] = body["data"]["createSetupIntent"]["userErrors"]
    assert error["code"] == "COLLECTION_OFF" and "STRIPE_API_KEY" in error["message"]


async def test_an_issued_invoice_is_collected_from_the_saved_card_once(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_pays", CARD_SUCCEEDS, localstripe
    )
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=2)) == 1
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=3)) == 0
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox == [("collected", 1, None)] and [a[:2] for a in attempts] == [(1, "succeeded")]
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "paid"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0
    intent_id = (await session.execute(text("SELECT payment_intent_id FROM payment_attempts"))).scalar_one()
    client = localstripe.client()
    intent = client.v1.payment_intents.retrieve(intent_id)
    assert (intent.amount, intent.currency, intent.status) == (1000, "usd", "succeeded")


async def test_a_declined_card_makes_the_customer_past_due_and_a_new_card_pays_at_the_retry(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_declines", CARD_DECLINED, localstripe
    )
    failed_at = JAN_31 + timedelta(minutes=2)
    await collect_invoices(sessions, configured, as_of=failed_at)
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("pending", 1) and attempts[0][1] == "failed" and "declined" in attempts[0][2]
    assert await customer_status(session, customer_id) == "PAST_DUE"
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "issued"
    assert await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=2)) == 0, "not yet"
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    card_for(localstripe, stripe_customer, CARD_SUCCEEDS)  # the customer saves a working card
    assert await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=3)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 2) and [a[:2] for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert await customer_status(session, customer_id) == "ACTIVE"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0


async def test_when_every_retry_fails_the_customer_is_suspended_and_entitlements_deny(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    token_for,
    stripe_client: httpx.AsyncClient,
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_never", CARD_DECLINED, localstripe
    )
    failed_at = JAN_31 + timedelta(minutes=2)
    for days in (0, 3, 5):
        await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=days))
        assert await customer_status(session, customer_id) == "PAST_DUE"
    await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=7))
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("failed", 4) and [a[1] for a in attempts] == ["failed"] * 4
    assert await customer_status(session, customer_id) == "SUSPENDED"
    viewer = {"Authorization": f"Bearer {await token_for('viewer')}"}
    answer = await stripe_client.get("/v1/customers/org_never/entitlements/calls", headers=viewer)
    assert answer.json()["allowed"] is False


async def test_stripe_stopped_during_collection_is_retried_with_backoff_and_charges_once_when_back(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    _, configured = await billed_with_card(session, sessions, settings, "org_later", CARD_SUCCEEDS, localstripe)
    impatient = configured.model_copy(update={"stripe_timeout_seconds": 1.0, "stripe_max_network_retries": 0})
    with localstripe.stopped():
        assert await collect_invoices(sessions, impatient, as_of=JAN_31 + timedelta(minutes=2)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("in_flight", 1) and "ReadTimeout" in outbox[0][2]
    assert attempts == [] and await invoice_status(session) == "issued", "nothing recorded, nothing lost"
    retry_at = (await session.execute(text("SELECT next_attempt_at FROM collection_outbox"))).scalar_one()
    assert retry_at == JAN_31 + timedelta(minutes=4), "backoff: 2 minutes after the first failure"
    assert await collect_invoices(sessions, impatient, as_of=JAN_31 + timedelta(minutes=3)) == 0, "backoff"
    assert await collect_invoices(sessions, impatient, as_of=JAN_31 + timedelta(minutes=4)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 1) and [a[:2] for a in attempts] == [(1, "succeeded")]
    assert await invoice_status(session) == "paid"
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    charges = localstripe.client().v1.charges.list(params={"customer": stripe_customer}).data
    assert [(c.amount, c.status) for c in charges] == [(1000, "succeeded")], "exactly one charge"


async def test_a_crash_between_stripes_answer_and_the_commit_charges_once(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> None:
    """The worker dies after Stripe charged the card and before Tally committed the outcome: the
    crash is the transaction that never commits (the database sees exactly that when a process
    dies). After the lease, the attempt is claimed again, its charge is found, and it is recorded
    without calling for a second one."""
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_crash", CARD_SUCCEEDS, localstripe
    )
    gateway = stripe_gateway(configured)
    assert gateway is not None
    crashed_at = JAN_31 + timedelta(minutes=2)
    async with sessions() as worker:
        claimed = await claim_next(worker, as_of=crashed_at)
        assert claimed is not None
        await worker.commit()
        payer = await payer_of(worker, gateway, claimed, as_of=crashed_at)
        assert payer is not None
        await worker.commit()
        charged = await charge(gateway, claimed, payer)
        assert charged.status == "succeeded"
        await worker.rollback()  # the crash: the outcome is never committed
    assert await collect_invoices(sessions, configured, as_of=crashed_at + timedelta(minutes=5)) == 0, "leased"
    assert await collect_invoices(sessions, configured, as_of=crashed_at + LEASE) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 1) and attempts == [(1, "succeeded", None)]
    recorded = (await session.execute(text("SELECT payment_intent_id FROM payment_attempts"))).scalar_one()
    assert recorded == charged.payment_intent_id
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    charges = localstripe.client().v1.charges.list(params={"customer": stripe_customer}).data
    assert len(charges) == 1, "exactly one charge"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0
