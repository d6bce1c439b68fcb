"""Collection against a real localstripe (a stateful Stripe stand-in from PyPI, run here as a
server on a free port): a Stripe customer created on demand and stored once, SetupIntents for
the frontend, and refusals. localstripe ignores Idempotency-Key headers, so what Stripe itself
does with the keys Tally sends is not observable here; what Tally stores is."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.collection import stripe_gateway
from app.jobs import collect_invoices
from app.main import create_app
from app.settings import Settings
from billing.collection import stripe_customer_id
from ledger import service as ledger
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, JAN_31, subscribe
from tests.conftest import graphql
from tests.e2e.conftest import free_port

SETUP = """mutation($i: CreateSetupIntentInput!) { createSetupIntent(input: $i) {
  setupIntentId clientSecret userErrors { field code message } } }"""
CREATE = """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }"""


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("localstripe") / "localstripe.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("localstripe")), "--port", str(port)], stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/v1/customers", headers={"Authorization": "Bearer sk_test_x"}, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
async def stripe_client(settings: Settings, database_url: str, localstripe: str) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(update={"stripe_api_key": "sk_test_tally", "stripe_api_base": localstripe})
    app: FastAPI = create_app(configured, database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def new_customer(client: httpx.AsyncClient, admin: str, external_id: str) -> str:
    variables = {"i": {"externalId": external_id, "name": "Acme", "currency": "USD", "email": "ap@acme.example"}}
    created = (await graphql(client, admin, CREATE, variables)).json()["data"]["createCustomer"]
    return str(created["customer"]["id"])


async def test_setup_intents_for_one_stripe_customer_created_on_demand(
    stripe_client: httpx.AsyncClient, token_for, session: AsyncSession, localstripe: str
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
    client = stripe.StripeClient("sk_test_tally", base_addresses={"api": localstripe})
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


def card_for(localstripe: str, stripe_customer: str, number: str) -> None:
    """What the frontend does with a SetupIntent: a card saved to the Stripe customer, made the
    default for invoices."""
    client = stripe.StripeClient("sk_test_tally", base_addresses={"api": localstripe})
    card = {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})  # type: ignore[typeddict-item]
    client.v1.payment_methods.attach(method.id, params={"customer": stripe_customer})
    client.v1.customers.update(stripe_customer, params={"invoice_settings": {"default_payment_method": method.id}})


async def billed_with_card(
    session: AsyncSession, sessions: Any, settings: Settings, external_id: str, card: str | None, localstripe: str
) -> tuple[uuid.UUID, Settings]:
    """A Basic customer whose opening invoice (10.00) is issued, with a card saved (or none)."""
    configured = settings.model_copy(update={"stripe_api_key": "sk_test_tally", "stripe_api_base": localstripe})
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=1))
    await session.commit()
    customer_id = await subscribe(session, external_id, "basic", JAN_31)
    gateway = stripe_gateway(configured)
    assert gateway is not None
    stripe_customer = await stripe_customer_id(session, gateway, customer_id, as_of=JAN_31)
    await session.commit()
    if card:
        card_for(localstripe, stripe_customer, card)
    await run_billing(sessions, configured, as_of=JAN_31 + timedelta(minutes=1))
    return customer_id, configured


async def outbox_and_attempts(session: AsyncSession) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    outbox = (await session.execute(text("SELECT status, attempts, last_error FROM collection_outbox"))).all()
    attempts = (
        await session.execute(text("SELECT attempt, status, error FROM payment_attempts ORDER BY attempt"))
    ).all()
    return [tuple(r) for r in outbox], [tuple(r) for r in attempts]


async def test_an_issued_invoice_is_collected_from_the_saved_card_once(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: str
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_pays", "4242424242424242", localstripe
    )
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=2)) == 1
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=3)) == 0
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox == [("collected", 1, None)] and [a[:2] for a in attempts] == [(1, "succeeded")]
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "paid"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0
    intent_id = (await session.execute(text("SELECT payment_intent_id FROM payment_attempts"))).scalar_one()
    client = stripe.StripeClient("sk_test_tally", base_addresses={"api": localstripe})
    intent = client.v1.payment_intents.retrieve(intent_id)
    assert (intent.amount, intent.currency, intent.status) == (1000, "usd", "succeeded")


async def customer_status(session: AsyncSession, customer_id: uuid.UUID) -> str:
    return str((await session.execute(text(f"SELECT status FROM customers WHERE id = '{customer_id}'"))).scalar_one())


async def test_a_declined_card_makes_the_customer_past_due_and_a_new_card_pays_at_the_retry(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: str
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_declines", "4000000000000341", localstripe
    )
    failed_at = JAN_31 + timedelta(minutes=2)
    await collect_invoices(sessions, configured, as_of=failed_at)
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("pending", 1) and attempts[0][1] == "failed" and "declined" in attempts[0][2]
    assert await customer_status(session, customer_id) == "PAST_DUE"
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "issued"
    assert await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=2)) == 0, "not yet"
    stripe_customer = (await session.execute(text("SELECT stripe_customer_id FROM stripe_customers"))).scalar_one()
    card_for(localstripe, stripe_customer, "4242424242424242")  # the customer saves a working card
    assert await collect_invoices(sessions, configured, as_of=failed_at + timedelta(days=3)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 2) and [a[:2] for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert await customer_status(session, customer_id) == "ACTIVE"
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0


async def test_when_every_retry_fails_the_customer_is_suspended_and_entitlements_deny(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: str,
    token_for,
    stripe_client: httpx.AsyncClient,
) -> None:
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_never", "4000000000000341", localstripe
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


async def test_stripe_unreachable_is_retried_with_backoff_and_charges_once_when_back(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: str
) -> None:
    _, configured = await billed_with_card(session, sessions, settings, "org_later", "4242424242424242", localstripe)
    down = configured.model_copy(
        update={"stripe_api_base": f"http://127.0.0.1:{free_port()}", "stripe_max_network_retries": 0}
    )
    assert await collect_invoices(sessions, down, as_of=JAN_31 + timedelta(minutes=2)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("pending", 1) and attempts == [], "nothing reached Stripe, nothing recorded"
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=2, seconds=30)) == 0, "backoff"
    assert await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=5)) == 1
    outbox, attempts = await outbox_and_attempts(session)
    assert outbox[0][:2] == ("collected", 2) and [a[:2] for a in attempts] == [(2, "succeeded")]
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "paid"
