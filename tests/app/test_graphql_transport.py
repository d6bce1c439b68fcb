"""Bodies of /graphql that cannot be read are a 400, never a 5xx, and run nothing."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ __typename }", "variables": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"query": "{ __typename }", "variables": {"x": ' + b"9" * 5000 + b"}}",
        b'{"query": "{ __typename }", "variables": {"x": 1e200000}}',
        b'{"query": "{ __typename }", "variables": {"x": NaN}}',
        b'{"query": "{ __typename }"',
    ],
    ids=["nested-5000-deep", "integer-5000-digits", "1e200000", "NaN", "truncated"],
)
async def test_an_unreadable_graphql_body_is_a_400(client: httpx.AsyncClient, token_for, body: bytes) -> None:
    token = await token_for("admin")
    response = await client.post(
        "/graphql", content=body, headers={"Authorization": f"Bearer {token}", "content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:  # readable after all (1e200000 is a float: inf; NaN is Python's)
        assert response.json()["data"] == {"__typename": "Query"}
    else:
        assert response.status_code == 400
