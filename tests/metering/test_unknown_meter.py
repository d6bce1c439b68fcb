"""An unknown meter answers one way everywhere: the code UNKNOWN_METER naming the field `meter`,
in GraphQL without blanking the customer around it, in REST as a 404 with the same code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import graphql
from tests.metering.test_ingestion_api import customers_on_plans

__all__ = ["customers_on_plans"]

CUSTOMER = """query($e: String!, $meter: String!, $from: DateTime!, $to: DateTime!) {
  customer(externalId: $e) {
    externalId
    entitlement(meter: $meter) { allowed }
    usageSeries(meter: $meter, from: $from, to: $to, granularity: DAY) { start quantity }
  } }"""
AUTHORIZE = """mutation($i: AuthorizeInput!) { authorize(input: $i) {
  authorization { id } userErrors { field code message } } }"""


async def test_an_unknown_meter_is_one_coded_error_everywhere(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    admin = await token_for("admin")
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(days=3)).isoformat(), "to": now.isoformat()}

    known = (await graphql(client, admin, CUSTOMER, {"e": "org_hobby", "meter": "requests", **window})).json()
    assert "errors" not in known and known["data"]["customer"]["entitlement"] is not None

    body = (await graphql(client, admin, CUSTOMER, {"e": "org_hobby", "meter": "nope", **window})).json()
    customer = body["data"]["customer"]
    assert customer == {"externalId": "org_hobby", "entitlement": None, "usageSeries": None}, "the customer stays"
    errors = sorted(body["errors"], key=lambda e: e["path"])
    assert [(e["path"], e["extensions"], e["message"]) for e in errors] == [
        (["customer", "entitlement"], {"code": "UNKNOWN_METER", "field": ["meter"]}, "meter: no meter 'nope'"),
        (["customer", "usageSeries"], {"code": "UNKNOWN_METER", "field": ["meter"]}, "meter: no meter 'nope'"),
    ]

    rest = await client.get("/v1/customers/org_hobby/entitlements/nope", headers={"Authorization": f"Bearer {admin}"})
    assert rest.status_code == 404
    assert rest.json() == {"code": "UNKNOWN_METER", "field": "meter", "message": "no meter 'nope'"}

    customer_id = (await graphql(client, admin, '{ customer(externalId: "org_hobby") { id } }')).json()
    held = {
        "customerId": customer_id["data"]["customer"]["id"],
        "meter": "nope",
        "quantity": "1",
        "idempotencyKey": "k",
    }
    refused = (await graphql(client, admin, AUTHORIZE, {"i": held})).json()["data"]["authorize"]
    assert refused["userErrors"] == [{"field": ["meter"], "code": "UNKNOWN_METER", "message": "no meter 'nope'"}]


async def test_a_refused_range_is_coded_too(client: httpx.AsyncClient, customers_on_plans: str, token_for) -> None:
    admin = await token_for("admin")
    now = datetime.now(UTC)
    backwards = {
        "e": "org_hobby",
        "meter": "requests",
        "from": now.isoformat(),
        "to": (now - timedelta(days=1)).isoformat(),
    }
    body = (await graphql(client, admin, CUSTOMER, backwards)).json()
    assert body["data"]["customer"]["externalId"] == "org_hobby"
    [error] = body["errors"]
    assert error["extensions"] == {"code": "INVALID_RANGE", "field": ["to"]}
