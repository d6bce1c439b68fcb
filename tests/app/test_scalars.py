"""The Decimal scalar refuses what is not an exact, finite decimal with a coded error, and the
mutation it was sent to changes nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import graphql

GRANT = "mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { grant { id } userErrors { code } } }"
CREATE = 'mutation { createCustomer(input: {externalId: "org_s", name: "S", currency: "USD"}) { customer { id } } }'


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-inf", "sNaN", "12,5", 12.5], ids=str)
async def test_a_decimal_that_is_not_finite_and_exact_is_refused_with_a_code(
    client: httpx.AsyncClient, token_for, amount: object
) -> None:
    admin = await token_for("admin")
    customer_id = (await graphql(client, admin, CREATE)).json()["data"]["createCustomer"]["customer"]["id"]
    variables = {"i": {"customerId": customer_id, "amount": amount, "reason": "r", "idempotencyKey": "k"}}
    response = await client.post(
        "/graphql",
        content=json.dumps({"query": GRANT, "variables": variables}),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["data"] is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["INVALID_DECIMAL"]
    balance = await graphql(
        client,
        admin,
        "query($id: ID!) { customer(id: $id) { creditGrants { edges { node { id } } } } }",
        {"id": customer_id},
    )
    assert balance.json()["data"]["customer"]["creditGrants"]["edges"] == []
