"""Collection end to end: a real `tally serve` with collection on, a real localstripe that sends
its signed webhooks to that server over HTTP, and the `tally` commands an operator would run.

The server's periodic jobs tick once when it starts (on an empty database) and then every five
minutes, so within a test the jobs run when the test runs them, through the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.collection import stripe_gateway
from app.database import create_engine, session_factory
from app.settings import Settings
from billing.collection.outbox import charge, claim_next, payer_of
from tests.billing.scenario import CATALOG, JAN_31
from tests.billing.stripe_support import (
    API_KEY,
    CARD_NEEDS_AUTHENTICATION,
    CARD_SUCCEEDS,
    WEBHOOK_SECRET,
    LocalStripe,
    card_for,
    start_localstripe,
)
from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import TALLY, server_env, start_server

pytestmark = pytest.mark.e2e
ISSUED_AT = JAN_31 + timedelta(minutes=1)
COLLECTED_AT = JAN_31 + timedelta(minutes=2)
COLLECTION = """query($id: ID!) { customerCollection(customerId: $id) { stripeCustomerId
  invoices { invoiceId invoiceNumber invoiceStatus status lastError attempts { number status paymentIntentId } }
  payments { paymentIntentId amount { amount currency } } } }"""
CREATE = (
    """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { message } } }"""
)
SETUP = (
    """mutation($i: CreateSetupIntentInput!) { createSetupIntent(input: $i) { clientSecret userErrors { message } } }"""
)


@dataclass(frozen=True)
class CollectingServer:
    base_url: str
    env: dict[str, str]
    database_url: str
    localstripe: LocalStripe
    token: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TALLY), *args], env=self.env, capture_output=True, text=True, timeout=120)

    def graphql(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.base_url}/graphql",
            json={"query": document, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=20,
        )
        body = answer.json()
        assert answer.status_code == 200 and "errors" not in body, body
        return dict(body["data"])


@pytest.fixture(scope="module")
def collecting_server(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectingServer]:
    data_dir = tmp_path_factory.mktemp("stripe-live")
    localstripe = start_localstripe(data_dir / "localstripe.log")
    url = clone_database(server_url, "tally_stripe_live")
    env = {
        **server_env(url, data_dir),
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": localstripe.base,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # The journeys bill customers who started on Jan 31 with `tally billing run --as-of`.
        "TALLY_BACKDATE_MAX_DAYS": "3650",
    }
    process, base_url = start_server(env, data_dir / "serve.log")
    localstripe.send_webhooks_to(f"{base_url}/webhooks/stripe")
    catalog = data_dir / "catalog.toml"
    catalog.write_text(CATALOG)
    for command in (["catalog", "apply", str(catalog)], ["token", "create", "--role", "admin"]):
        done = subprocess.run([str(TALLY), *command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    try:
        yield CollectingServer(base_url, env, url, localstripe, done.stdout.strip())
    finally:
        process.terminate()
        process.wait(timeout=20)
        localstripe.process.terminate()
        localstripe.process.wait(timeout=10)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_stripe_live WITH (FORCE)")


def customer_with_card(server: CollectingServer, external_id: str, card: str) -> tuple[str, str]:
    """A Basic customer from Jan 31 whose card the frontend saved: (customer id, Stripe customer)."""
    variables = {
        "i": {
            "externalId": external_id,
            "name": external_id,
            "currency": "USD",
            "planKey": "basic",
            "startedAt": JAN_31.isoformat(),
        }
    }
    customer_id = server.graphql(CREATE, variables)["createCustomer"]["customer"]["id"]
    setup = server.graphql(SETUP, {"i": {"customerId": customer_id, "idempotencyKey": "card"}})["createSetupIntent"]
    assert setup["clientSecret"], setup
    stripe_customer = server.graphql(COLLECTION, {"id": customer_id})["customerCollection"]["stripeCustomerId"]
    card_for(server.localstripe, stripe_customer, card)
    return customer_id, stripe_customer


async def charge_and_crash(server: CollectingServer) -> str:
    """The collection worker's steps up to Stripe's answer, then a crash before the commit."""
    settings = Settings(stripe_api_key=API_KEY, stripe_api_base=server.localstripe.base)
    gateway = stripe_gateway(settings)
    assert gateway is not None
    engine = create_engine(server.database_url)
    try:
        async with session_factory(engine)() as worker:
            claimed = await claim_next(worker, as_of=COLLECTED_AT)
            assert claimed is not None
            await worker.commit()
            payer = await payer_of(worker, gateway, claimed, as_of=COLLECTED_AT)
            assert payer is not None
            await worker.commit()
            charged = await charge(gateway, claimed, payer)
            await worker.rollback()
    finally:
        await engine.dispose()
    assert charged.status == "succeeded" and charged.payment_intent_id
    return charged.payment_intent_id


def stored_events(database_url: str, payment_intent: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT type, status FROM stripe_events WHERE object_id = %s ORDER BY created", (payment_intent,)
        )
        return [(str(kind), str(status)) for kind, status in rows]


def spans_named(database_url: str, name: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT trace_id, span_id, parent_span_id, attributes, links FROM spans WHERE name = %s", (name,)
        )
        keys = ("trace_id", "span_id", "parent_span_id", "attributes", "links")
        return [dict(zip(keys, row, strict=True)) for row in rows]


def children_of(database_url: str, span_id: str) -> list[str]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute("SELECT name FROM spans WHERE parent_span_id = %s", (span_id,))
        return [str(name) for (name,) in rows]


def test_a_payment_reported_only_by_stripes_webhook_pays_the_invoice_once(collecting_server: CollectingServer) -> None:
    server = collecting_server
    customer_id, stripe_customer = customer_with_card(server, "org_live_pays", CARD_SUCCEEDS)
    issued = server.cli("billing", "run", "--as-of", ISSUED_AT.isoformat(), "--json")
    assert issued.returncode == 0 and '"invoicesIssued": 1' in issued.stdout, issued.stdout + issued.stderr

    payment_intent = asyncio.run(charge_and_crash(server))
    deadline = time.monotonic() + 30
    while ("payment_intent.succeeded", "received") not in stored_events(server.database_url, payment_intent):
        assert time.monotonic() < deadline, "localstripe's signed webhook never reached the server"
        time.sleep(0.2)

    processed = server.cli("jobs", "run", "stripe-events", "--as-of", (COLLECTED_AT + timedelta(minutes=1)).isoformat())
    assert processed.returncode == 0, processed.stderr
    assert stored_events(server.database_url, payment_intent) == [("payment_intent.succeeded", "processed")]
    collection = server.graphql(COLLECTION, {"id": customer_id})["customerCollection"]
    [invoice] = collection["invoices"]
    assert (invoice["invoiceStatus"], invoice["status"]) == ("paid", "collected")
    assert invoice["attempts"] == [{"number": 1, "status": "succeeded", "paymentIntentId": payment_intent}]
    assert collection["payments"] == [
        {"paymentIntentId": payment_intent, "amount": {"amount": "10.00", "currency": "USD"}}
    ]
    verified = server.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    with psycopg.connect(server.database_url) as connection:
        [(delivery_trace,)] = connection.execute(
            "SELECT trace_id FROM stripe_events WHERE object_id = %s", (payment_intent,)
        ).fetchall()
    [processing] = [
        span
        for span in spans_named(server.database_url, "stripe.event")
        if span["attributes"]["stripe.object_id"] == payment_intent
    ]
    assert [link["trace_id"] for link in processing["links"]] == [delivery_trace], "processing links to delivery"
    assert processing["attributes"]["tally.outcome"] == "processed"

    later = (COLLECTED_AT + timedelta(hours=1)).isoformat()
    assert server.cli("jobs", "run", "outbox", "--as-of", later).stdout.startswith("0 invoice collection")
    charges = server.localstripe.client().v1.charges.list(params={"customer": stripe_customer}).data
    assert [(c.amount, c.status) for c in charges] == [(1000, "succeeded")], "charged exactly once"


def test_a_card_that_needs_authentication_is_surfaced_on_a_running_server(
    collecting_server: CollectingServer,
) -> None:
    server = collecting_server
    customer_id, _ = customer_with_card(server, f"org_live_3ds_{uuid.uuid4().hex[:6]}", CARD_NEEDS_AUTHENTICATION)
    assert server.cli("billing", "run", "--as-of", ISSUED_AT.isoformat()).returncode == 0
    attempted = server.cli("jobs", "run", "outbox", "--as-of", COLLECTED_AT.isoformat())
    assert attempted.stdout.startswith("1 invoice collection"), attempted.stdout + attempted.stderr
    [invoice] = server.graphql(COLLECTION, {"id": customer_id})["customerCollection"]["invoices"]
    assert invoice["status"] == "action_required"
    assert invoice["lastError"] == "the customer must authenticate the payment"
    assert [a["status"] for a in invoice["attempts"]] == ["requires_action"]
    assert invoice["invoiceStatus"] == "issued"
    [attempt_span] = [
        span
        for span in spans_named(server.database_url, "collection.attempt")
        if span["attributes"]["tally.invoice_id"] == invoice["invoiceId"]
    ]
    with psycopg.connect(server.database_url) as connection:
        [(issued_in,)] = connection.execute(
            "SELECT trace_id FROM invoices WHERE id = %s", (invoice["invoiceId"],)
        ).fetchall()
    assert [link["trace_id"] for link in attempt_span["links"]] == [issued_in], "collection links to issuance"
    assert attempt_span["attributes"]["tally.outcome"] == "requires_action"
    assert "POST" in " ".join(children_of(server.database_url, attempt_span["span_id"])), "Stripe calls are spans"
    reconciled = server.cli("reconcile", "--as-of", (COLLECTED_AT + timedelta(days=1)).isoformat(), "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


def test_stale_events_are_refused_by_the_running_server(collecting_server: CollectingServer, tmp_path: Path) -> None:
    from tests.billing.stripe_support import event_of, fixture_with, signed

    payload = event_of("payment_intent.succeeded", fixture_with("payment_intent"), "evt_stale")
    stale = httpx.post(
        f"{collecting_server.base_url}/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": signed(payload, at=int(time.time()) - 400)},
    )
    assert stale.status_code == 400 and stale.json()["code"] == "SIGNATURE_INVALID"
    assert stored_events(collecting_server.database_url, fixture_with("payment_intent")["id"]) == []
