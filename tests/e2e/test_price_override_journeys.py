"""Per-customer prices against a real `tally serve`: a finance token reviews and sets a customer's
own price and limit over GraphQL, the edge's entitlement endpoint and the upcoming invoice answer
with them, `tally prices` shows and removes the override, bad input is a userError."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

SET = """mutation($i: SetPriceOverrideInput!) { setPriceOverride(input: $i) {
  priceOverride { id after { unitPrice limit } }
  effect { chargeBefore { amount } chargeAfter { amount } }
  userErrors { field code } } }"""
CUSTOMER = """query($id: ID!) { customer(id: $id) {
  subscription { currentPeriodStart charges { id meter { key } planPrice { unitPrice limit } customerPrice { unitPrice limit } } }
  upcomingInvoice { lines { description unitPrice amount { amount } } } } }"""


def post(server: LiveServer, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base_url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def entitlement(server: LiveServer, token: str, external_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/v1/customers/{external_id}/entitlements/requests",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_customers_own_price_and_limit_on_a_running_server(live_server: LiveServer) -> None:
    finance = live_server.cli("token", "create", "--role", "finance").strip()
    edge = live_server.cli("token", "create", "--role", "edge").strip()
    external_id = f"org_prices_{uuid.uuid4().hex[:8]}"
    started = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    created = post(
        live_server,
        finance,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {
            "i": {
                "externalId": external_id,
                "name": "Prices Co",
                "currency": "USD",
                "planKey": "hobby",
                "startedAt": started,
            }
        },
    )["createCustomer"]
    customer_id = created["customer"]["id"]
    # 55 requests: past the Hobby plan's limit of 50, and free at its unit price of 0.
    events = [
        {
            "id": f"{external_id}-{i}",
            "customer": external_id,
            "type": "request.completed",
            "timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "properties": {"model": "fast-1"},
        }
        for i in range(55)
    ]
    sent = httpx.post(
        f"{live_server.base_url}/v1/events", json=events, headers={"Authorization": f"Bearer {edge}"}, timeout=20
    )
    assert sent.status_code == 200 and sent.json()["accepted"] == 55, sent.text
    assert entitlement(live_server, edge, external_id) == {
        "allowed": False,
        "used": "55",
        "limit": "50",
        "remaining": "0",
        "reason": "LIMIT_REACHED",
    }

    period_start = post(live_server, finance, CUSTOMER, {"id": customer_id})["customer"]["subscription"][
        "currentPeriodStart"
    ]
    order = {
        "customerId": customer_id,
        "charge": {"meterKey": "requests"},
        "unitPrice": "0.01",
        "limit": "60",
        "effectiveAt": period_start,
        "reason": "pilot: paid requests beyond the free tier",
        "idempotencyKey": f"e2e-{uuid.uuid4()}",
    }
    preview = post(live_server, finance, SET, {"i": {**order, "dryRun": True}})["setPriceOverride"]
    assert preview["effect"] == {"chargeBefore": {"amount": "0.00"}, "chargeAfter": {"amount": "0.55"}}
    assert entitlement(live_server, edge, external_id)["allowed"] is False, "a dry run changes nothing"
    done = post(live_server, finance, SET, {"i": order})["setPriceOverride"]
    assert done["userErrors"] == [] and done["priceOverride"]["after"] == {"unitPrice": "0.01", "limit": "60"}

    assert entitlement(live_server, edge, external_id) == {
        "allowed": True,
        "used": "55",
        "limit": "60",
        "remaining": "5",
        "reason": None,
    }
    customer = post(live_server, finance, CUSTOMER, {"id": customer_id})["customer"]
    [charge] = customer["subscription"]["charges"]
    assert (charge["planPrice"], charge["customerPrice"]) == (
        {"unitPrice": "0", "limit": "50"},
        {"unitPrice": "0.01", "limit": "60"},
    )
    [line] = [
        line for line in customer["upcomingInvoice"]["lines"] if line["description"].startswith("Premium requests")
    ]
    assert (line["unitPrice"], line["amount"]["amount"]) == ("0.01", "0.55")

    shown = json.loads(live_server.cli("prices", "show", external_id, "--json"))
    assert shown["charges"][0]["customerPrice"]["unit_price"] == "0.01" and shown["charges"][0]["overridden"] is True
    assert shown["charges"][0]["billed"] == "in_arrears"
    refused = post(live_server, finance, SET, {"i": {**order, "unitPrice": "-1", "idempotencyKey": "e2e-bad"}})
    assert refused["setPriceOverride"]["userErrors"] == [{"field": ["unitPrice"], "code": "INVALID"}]

    removed = json.loads(
        live_server.cli("prices", "remove", external_id, "--meter", "requests", "--reason", "pilot over", "--json")
    )
    assert removed["action"] == "remove" and removed["after"]["limit"] == "50"
    assert entitlement(live_server, edge, external_id)["allowed"] is False, "back to the plan's limit"
