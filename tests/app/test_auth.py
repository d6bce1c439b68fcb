"""Who may do what: one matrix of role by operation, over GraphQL and REST, with real tokens."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app import auth
from app.auth import revoke_token
from tests.conftest import graphql, now

OPERATIONS = {
    "customers": ("{ customers { edges { node { externalId } } } }", "customers"),
    "customer": ('{ customer(externalId: "org_other") { externalId } }', "customer"),
    "createCustomer": (
        'mutation { createCustomer(input: {externalId: "new_%s", name: "N", currency: "USD"}) '
        "{ customer { id } userErrors { code } } }",
        "createCustomer",
    ),
    "meters": ("{ meters { key } }", "meters"),
    "plans": ("{ plans { key } }", "plans"),
    "traces": ("{ traces { edges { node { traceId } } } }", "traces"),
}
ALLOWED = {
    "admin": {"customers", "customer", "createCustomer", "meters", "plans", "traces"},
    "finance": {"customers", "customer", "createCustomer", "meters", "plans", "traces"},
    "support": {"customers", "customer", "createCustomer", "meters", "plans", "traces"},
    "viewer": {"customers", "customer", "meters", "plans", "traces"},
    "ingest": set(),
    "customer": {"customers", "customer", "meters", "plans"},
    "edge": set(),
}


@pytest.fixture
async def two_customers(client: httpx.AsyncClient, token_for) -> None:
    admin = await token_for("admin")
    for external_id in ("org_mine", "org_other"):
        response = await graphql(
            client,
            admin,
            f'mutation {{ createCustomer(input: {{externalId: "{external_id}", name: "{external_id}", currency: "USD"}}) '
            "{ userErrors { code } } }",
        )
        assert response.json()["data"]["createCustomer"]["userErrors"] == []


@pytest.mark.parametrize("role", list(ALLOWED))
async def test_role_operation_matrix(client: httpx.AsyncClient, two_customers: None, token_for, role: str) -> None:
    token = await token_for(role, "org_mine" if role == "customer" else None)
    for name, (query, field) in OPERATIONS.items():
        body = (await graphql(client, token, query.replace("%s", role))).json()
        if name in ALLOWED[role]:
            assert "errors" not in body, (role, name, body)
            assert body["data"][field] is not None or name == "customer", (role, name)
        else:
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (role, name, body)
            assert body["errors"][0]["message"].startswith("Forbidden: your role may not"), (role, name)


async def test_customer_token_sees_only_its_customer(client: httpx.AsyncClient, two_customers: None, token_for) -> None:
    token = await token_for("customer", "org_mine")
    listed = (await graphql(client, token, OPERATIONS["customers"][0])).json()["data"]["customers"]["edges"]
    assert [edge["node"]["externalId"] for edge in listed] == ["org_mine"]
    other = (await graphql(client, token, OPERATIONS["customer"][0])).json()["data"]["customer"]
    assert other is None, "another customer reads as not found"
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/v1/customers/org_mine", headers=headers)).status_code == 200
    hidden = await client.get("/v1/customers/org_other", headers=headers)
    assert hidden.status_code == 404 and hidden.json()["code"] == "NOT_FOUND"


async def test_no_token_bad_token_and_revoked_token_are_401_json(
    client: httpx.AsyncClient, session: AsyncSession, token_for
) -> None:
    missing = await client.post("/graphql", json={"query": "{ meters { key } }"})
    assert missing.status_code == 401
    assert missing.json()["code"] == "UNAUTHENTICATED"
    assert missing.headers["www-authenticate"] == "Bearer"
    bad = await graphql(client, "tly_not-a-real-token", "{ meters { key } }")
    assert (bad.status_code, bad.json()["message"]) == (401, "unknown or revoked token")
    token = await token_for("admin")
    assert (await graphql(client, token, "{ meters { key } }")).status_code == 200
    await revoke_token(session, token, as_of=now())
    await session.commit()
    assert (await graphql(client, token, "{ meters { key } }")).status_code == 401
    assert (await client.get("/v1/whoami")).status_code == 401


async def test_a_token_revoked_by_another_process_stops_working_within_the_cache_time(
    client: httpx.AsyncClient, session: AsyncSession, token_for
) -> None:
    token = await token_for("admin")
    assert (await graphql(client, token, "{ meters { key } }")).status_code == 200
    await session.execute(text("UPDATE api_tokens SET revoked_at = now()"))  # as `tally token revoke` does
    await session.commit()
    assert (await graphql(client, token, "{ meters { key } }")).status_code == 200, "remembered for a while"
    auth._viewers.expire(time.monotonic() + auth.TOKEN_CACHE_SECONDS)
    assert (await graphql(client, token, "{ meters { key } }")).status_code == 401


async def test_wrong_role_on_rest_is_403_json(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("ingest")
    response = await client.get("/v1/customers/anyone", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == {"code": "FORBIDDEN", "message": "the ingest role may not read customers"}
    whoami = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert whoami.json()["role"] == "ingest"


async def test_a_forbidden_mutation_changes_nothing(client: httpx.AsyncClient, token_for) -> None:
    viewer = await token_for("viewer")
    await graphql(client, viewer, OPERATIONS["createCustomer"][0].replace("%s", "sneaky"))
    admin = await token_for("admin")
    found = await graphql(client, admin, '{ customer(externalId: "new_sneaky") { id } }')
    assert found.json()["data"]["customer"] is None


async def test_the_edge_role_sends_usage_and_checks_entitlements_and_reads_nothing_else(
    client: httpx.AsyncClient, catalog: None, token_for
) -> None:
    admin = await token_for("admin")
    created = await graphql(
        client,
        admin,
        'mutation { createCustomer(input: {externalId: "org_edge", name: "Edge Co", email: "a@edge.example", '
        'currency: "USD", planKey: "hobby"}) { userErrors { code } } }',
    )
    assert created.json()["data"]["createCustomer"]["userErrors"] == []
    headers = {"Authorization": f"Bearer {await token_for('edge')}"}
    event = {"id": "evt-edge-1", "customer": "org_edge", "type": "request.completed", "timestamp": now().isoformat()}
    sent = await client.post("/v1/events", json=[event], headers=headers)
    assert (sent.status_code, sent.json()["accepted"]) == (200, 1)
    entitlement = await client.get("/v1/customers/org_edge/entitlements/requests", headers=headers)
    assert entitlement.status_code == 200 and entitlement.json()["used"] == "1"
    assert (await client.get("/v1/customers/org_nobody/entitlements/requests", headers=headers)).status_code == 404
    assert (await client.get("/v1/whoami", headers=headers)).json()["role"] == "edge"
    customer = await client.get("/v1/customers/org_edge", headers=headers)
    assert (customer.status_code, customer.json()["code"]) == (403, "FORBIDDEN")
    for query in (
        '{ customer(externalId: "org_edge") { name email } }',
        "{ customers { edges { node { externalId } } } }",
        "{ promotions { code } }",
        '{ invoice(number: "INV-000001") { id } }',
    ):
        body = (await client.post("/graphql", json={"query": query}, headers=headers)).json()
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", query
        assert "Edge Co" not in json.dumps(body)
