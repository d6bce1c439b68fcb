"""Collection against a real localstripe (a stateful Stripe stand-in from PyPI, run here as a
server on a free port): a Stripe customer created on demand and stored once, SetupIntents for
the frontend, and refusals. localstripe ignores Idempotency-Key headers, so what Stripe itself
does with the keys Tally sends is not observable here; what Tally stores is."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import stripe
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.main import create_app
from app.settings import Settings
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
