"""Several subscriptions of one customer over HTTP on a real `tally serve`: add an add-on on
another meter (and be refused one on a meter already charged), bill both with `tally billing run`,
ask each meter's entitlement over REST, cancel the add-on (naming it: the customer has two), and
see the base subscription go on; and in a real browser, the console's Subscription page picking the
add-on among the customer's subscriptions for a cancel's review (screenshotted for a person to judge)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import STORAGE_ADD_ON
from tests.e2e.conftest import TALLY, LiveServer, catalog_server, graphql_data
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e

SUBSCRIPTION = "id status cancelAt plan { key }"
CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { id } userErrors { field code message } } }"""
CREATE_SUBSCRIPTION = f"""mutation($input: CreateSubscriptionInput!) {{ createSubscription(input: $input) {{
  subscription {{ {SUBSCRIPTION} }} userErrors {{ field code message }} }} }}"""
CUSTOMER = f"""query($id: ID!) {{ customer(id: $id) {{ subscription {{ {SUBSCRIPTION} }}
  subscriptions {{ {SUBSCRIPTION} }}
  invoices(first: 20) {{ edges {{ node {{ number kind subscriptionId total {{ amount }} }} }} }} }} }}"""
CANCEL = """mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) {
  subscription { id status } issuedInvoices { kind subscriptionId total { amount } }
  userErrors { field code message } } }"""


@pytest.fixture(scope="module")
def add_on_server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own with the demo catalog and a storage add-on (no demo customers)."""
    with catalog_server(
        server_url, tmp_path_factory, "tally_add_on_live", "--no-jobs", more_catalog=STORAGE_ADD_ON
    ) as server:
        yield server


def entitlement(server: LiveServer, token: str, external_id: str, meter: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/v1/customers/{external_id}/entitlements/{meter}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def send(server: LiveServer, token: str, external_id: str, event_type: str, count: int) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    events = [
        {"id": f"{external_id}-{event_type}-{uuid.uuid4()}", "customer": external_id, "type": event_type,
         "timestamp": at, "properties": {"model": "fast-1"}}
        for _ in range(count)
    ]  # fmt: skip
    response = httpx.post(
        f"{server.base_url}/v1/events", json=events, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_add_on_subscribed_billed_and_canceled_over_http(add_on_server: LiveServer) -> None:
    server = add_on_server
    admin = server.cli("token", "create", "--role", "admin").strip()
    edge = server.cli("token", "create", "--role", "edge").strip()
    external_id = f"multi-{uuid.uuid4().hex[:8]}"
    created = graphql_data(
        server,
        admin,
        CREATE_CUSTOMER,
        {"input": {"externalId": external_id, "name": "Multi Co", "currency": "USD", "planKey": "pro"}},
    )["createCustomer"]
    assert created["userErrors"] == []
    customer_id = created["customer"]["id"]

    add = {"customerId": customer_id, "planKey": "storage-addon", "idempotencyKey": f"{external_id}-storage"}
    added = graphql_data(server, admin, CREATE_SUBSCRIPTION, {"input": add})["createSubscription"]
    assert added["userErrors"] == [] and added["subscription"]["plan"]["key"] == "storage-addon"
    add_on_id = added["subscription"]["id"]
    retried = graphql_data(server, admin, CREATE_SUBSCRIPTION, {"input": add})["createSubscription"]
    assert retried["subscription"]["id"] == add_on_id, "the same key adds it once"
    # Team charges `requests`, which Pro charges: refused, naming the field, nothing written.
    team = {"customerId": customer_id, "planKey": "team", "idempotencyKey": f"{external_id}-team"}
    refused = graphql_data(server, admin, CREATE_SUBSCRIPTION, {"input": team})["createSubscription"]
    assert refused["subscription"] is None
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["planKey"], "METER_ALREADY_CHARGED")]
    customer = graphql_data(server, admin, CUSTOMER, {"id": customer_id})["customer"]
    assert customer["subscription"]["plan"]["key"] == "pro", "the primary one: the first taken"
    assert [s["plan"]["key"] for s in customer["subscriptions"]] == ["pro", "storage-addon"]

    # Usage of each meter goes to the subscription that charges it.
    assert send(server, edge, external_id, "request.completed", 3)["accepted"] == 3
    assert send(server, edge, external_id, "storage.used", 4)["accepted"] == 4
    storage = entitlement(server, edge, external_id, "storage")
    assert (storage["allowed"], storage["used"], storage["limit"]) == (True, "4", "1000")
    assert entitlement(server, edge, external_id, "requests")["allowed"] is True

    # The billing run issues one opening invoice per subscription.
    server.cli("billing", "run")
    listed = graphql_data(server, admin, CUSTOMER, {"id": customer_id})["customer"]["invoices"]["edges"]
    invoices = [edge["node"] for edge in listed]
    by_subscription = {invoice["subscriptionId"]: invoice for invoice in invoices}
    pro_id = customer["subscriptions"][0]["id"]
    assert sorted(by_subscription) == sorted([pro_id, add_on_id]) and len(invoices) == 2
    assert (by_subscription[pro_id]["kind"], by_subscription[pro_id]["total"]["amount"]) == ("opening", "20.00")
    assert (by_subscription[add_on_id]["kind"], by_subscription[add_on_id]["total"]["amount"]) == ("opening", "0.00")

    # A cancel must say which subscription; naming the add-on ends it alone.
    cancel = {"customerId": customer_id, "timing": "IMMEDIATELY", "idempotencyKey": f"{external_id}-cancel"}
    unnamed = graphql_data(server, admin, CANCEL, {"input": cancel})["cancelSubscription"]
    assert [e["code"] for e in unnamed["userErrors"]] == ["SUBSCRIPTION_REQUIRED"]
    named = graphql_data(server, admin, CANCEL, {"input": {**cancel, "subscriptionId": add_on_id}})[
        "cancelSubscription"
    ]
    assert named["userErrors"] == [] and named["subscription"] == {"id": add_on_id, "status": "CANCELED"}
    assert {invoice["subscriptionId"] for invoice in named["issuedInvoices"]} == {add_on_id}
    assert entitlement(server, edge, external_id, "storage")["reason"] == "SUBSCRIPTION_CANCELED"
    assert entitlement(server, edge, external_id, "requests")["allowed"] is True
    assert send(server, edge, external_id, "request.completed", 1)["accepted"] == 1, "Pro still meters"
    after = graphql_data(server, admin, CUSTOMER, {"id": customer_id})["customer"]
    assert [(s["plan"]["key"], s["status"]) for s in after["subscriptions"]] == [
        ("pro", "ACTIVE"),
        ("storage-addon", "CANCELED"),
    ]


def test_the_console_picks_the_add_on_for_a_cancel_review(add_on_server: LiveServer, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = add_on_server
    admin = server.cli("token", "create", "--role", "admin").strip()
    external_id = f"picker-{uuid.uuid4().hex[:8]}"
    new = {"externalId": external_id, "name": "Picker Co", "currency": "USD", "planKey": "pro"}
    customer_id = graphql_data(server, admin, CREATE_CUSTOMER, {"input": new})["createCustomer"]["customer"]["id"]
    add = {"customerId": customer_id, "planKey": "storage-addon", "idempotencyKey": f"{external_id}-storage"}
    graphql_data(server, admin, CREATE_SUBSCRIPTION, {"input": add})
    email, password = f"{external_id}@example.com", "a long enough passphrase"
    created = subprocess.run(
        [str(TALLY), "user", "create", "--email", email, "--role", "support", "--password-stdin"],
        input=password,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    page = signed_in_page(browser, LiveServer(server.base_url, email, password, server.env, server.database_url))
    page.goto(f"{server.base_url}/console/customers/{customer_id}/lifecycle")
    picker = page.locator("#subscription-picker a")
    expect(picker).to_have_count(2)
    page.click("#subscription-picker >> text=Storage add-on")
    expect(page.locator("#subscription-picker a[aria-current=true]")).to_contain_text("Storage add-on")
    page.check("input[name=timing][value=IMMEDIATELY]")
    page.fill("input[name=reason]", "storage moved elsewhere")
    page.click("#preview-cancel")
    page.wait_for_selector("#lifecycle-preview")
    assert page.locator("#confirm-cancel").is_visible(), "the add-on's final invoice, before confirming"
    page.screenshot(path=str(tmp_path / "add-on-cancel-review.png"), full_page=True)
    customer = graphql_data(server, admin, CUSTOMER, {"id": customer_id})["customer"]
    assert [s["status"] for s in customer["subscriptions"]] == ["ACTIVE", "ACTIVE"], "a review changes nothing"
