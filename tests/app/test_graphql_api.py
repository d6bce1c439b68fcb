"""GraphQL over HTTP in-process: customers, catalog, limits, errors and the query budget."""

from __future__ import annotations

import httpx

from app.api.schema import build_schema
from app.settings import Settings
from tests.conftest import graphql

CREATE = """
mutation CreateCustomer($input: CreateCustomerInput!) {
  createCustomer(input: $input) {
    customer { id externalId currency status }
    userErrors { field code message }
  }
}"""
LIST = """
query Customers($search: String, $first: Int, $after: String) {
  customers(search: $search, first: $first, after: $after) {
    edges { node { id externalId name status } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def create(client: httpx.AsyncClient, token: str, **fields: object) -> dict:
    response = await graphql(client, token, CREATE, {"input": fields})
    assert response.status_code == 200, response.text
    return response.json()["data"]["createCustomer"]


async def test_create_customer_then_find_it(client: httpx.AsyncClient, catalog: None, token_for) -> None:
    token = await token_for("admin")
    payload = await create(
        client,
        token,
        externalId="org_1",
        name="Org One",
        email="a@org.example",
        currency="usd",
        planKey="pro",
    )
    assert payload["userErrors"] == []
    assert payload["customer"]["externalId"] == "org_1"
    assert payload["customer"]["currency"] == "USD"
    assert payload["customer"]["status"] == "ACTIVE"
    found = await graphql(
        client,
        token,
        "query($e: String) { customer(externalId: $e) { name subscription { plan { key version baseFee { amount currency } } } } }",
        {"e": "org_1"},
    )
    customer = found.json()["data"]["customer"]
    assert customer["name"] == "Org One"
    assert customer["subscription"]["plan"] == {
        "key": "pro",
        "version": 1,
        "baseFee": {"amount": "20.00", "currency": "USD"},
    }


async def test_duplicate_external_id_is_taken_and_changes_nothing(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    await create(client, token, externalId="org_dup", name="First", currency="EUR")
    second = await create(client, token, externalId="org_dup", name="Second", currency="EUR")
    assert second["customer"] is None
    assert second["userErrors"] == [
        {
            "field": ["externalId"],
            "code": "TAKEN",
            "message": "a customer with external id 'org_dup' already exists",
        }
    ]
    listed = (await graphql(client, token, LIST, {"search": "org_dup"})).json()["data"]["customers"]["edges"]
    assert [edge["node"]["name"] for edge in listed] == ["First"]


async def test_bad_customer_input_names_the_field(client: httpx.AsyncClient, catalog: None, token_for) -> None:
    token = await token_for("admin")
    cases = [
        ({"currency": "ZZZ"}, "currency", "INVALID"),
        ({"planKey": "platinum"}, "planKey", "NOT_FOUND"),
        ({"planKey": "pro", "currency": "EUR"}, "currency", "INVALID"),
        ({"email": "not-an-email"}, "email", "INVALID"),
        ({"name": "  "}, "name", "INVALID"),
        ({"startedAt": "2026-11-01T00:00:00"}, "startedAt", "INVALID"),
    ]
    for overrides, field, code in cases:
        fields = {"externalId": f"org_bad_{field}", "name": "Bad", "currency": "USD", **overrides}
        payload = await create(client, token, **fields)
        assert payload["customer"] is None, overrides
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [([field], code)], overrides
    listed = (await graphql(client, token, LIST, {"search": "org_bad"})).json()["data"]["customers"]["edges"]
    assert listed == []


async def test_customers_search_and_keyset_pages(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    for index in range(7):
        await create(
            client,
            token,
            externalId=f"acct_{index}",
            name=f"Zebra {index}",
            email=f"billing{index}@zebra.example",
            currency="USD",
        )
    await create(client, token, externalId="other", name="Other Co", currency="USD")
    seen: list[str] = []
    after = None
    while True:
        page = (await graphql(client, token, LIST, {"search": "zebra", "first": 3, "after": after})).json()
        connection = page["data"]["customers"]
        seen += [edge["node"]["externalId"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == [f"acct_{i}" for i in reversed(range(7))], "newest first, each exactly once"
    by_email = (await graphql(client, token, LIST, {"search": "BILLING3@"})).json()["data"]["customers"]
    assert [e["node"]["externalId"] for e in by_email["edges"]] == ["acct_3"]
    literal = (await graphql(client, token, LIST, {"search": "acct%"})).json()["data"]["customers"]
    assert literal["edges"] == [], "% is matched literally, not as a wildcard"


async def test_page_size_and_cursor_errors_are_graphql_errors(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("viewer")
    too_many = (await graphql(client, token, LIST, {"first": 1000})).json()
    assert too_many["errors"][0]["message"] == "first: must be between 1 and 100"
    bad_cursor = (await graphql(client, token, LIST, {"after": "garbage"})).json()
    assert bad_cursor["errors"][0]["message"].startswith("after:")


async def test_malformed_graphql_is_an_error_never_a_500(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    for query in [
        "{ customers(first: ",
        "{ nope }",
        "query { customers { edges { node { id } } } } trailing",
    ]:
        response = await graphql(client, token, query)
        assert response.status_code in (200, 400), response.text
        assert response.json()["errors"]
    not_json = await client.post(
        "/graphql",
        content=b"{{{",
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert not_json.status_code == 400


async def test_alias_limit(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    wide = "{ " + " ".join(f"a{i}: meters {{ key }}" for i in range(40)) + " }"
    response = await graphql(client, token, wide)
    assert "aliases" in response.json()["errors"][0]["message"].lower()
    assert "errors" not in (await graphql(client, token, "{ a: meters { key } b: plans { key } }")).json()


async def test_depth_limit_rejects_before_anything_runs() -> None:
    schema = build_schema(Settings(graphql_max_depth=4))
    deep = "{ customers { edges { node { subscription { plan { key } } } } } }"
    result = await schema.execute(deep, context_value=None)
    assert result.errors and "exceeds maximum operation depth" in result.errors[0].message
    shallow = await schema.execute("{ meters { key } }", context_value=None)
    assert shallow.errors and "Forbidden" in shallow.errors[0].message, "depth passes, then permissions apply"


async def test_meters_and_plans(client: httpx.AsyncClient, catalog: None, token_for) -> None:
    token = await token_for("viewer")
    data = (
        await graphql(
            client,
            token,
            "{ meters { key aggregation valueProperty groupBy } plans { key version currency "
            "baseFee { amount currency } charges { model unitPrice included minimum limit where "
            "tiers { upTo unitPrice } packageSize packagePrice meter { key } } } }",
        )
    ).json()["data"]
    assert [m["key"] for m in data["meters"]] == ["requests", "seats", "tokens"]
    assert {m["key"]: m["aggregation"] for m in data["meters"]}["seats"] == "UNIQUE_COUNT"
    plans = {p["key"]: p for p in data["plans"]}
    assert plans["hobby"]["charges"][0]["limit"] == "50"
    pro = plans["pro"]["charges"]
    assert pro[0]["tiers"] == [
        {"upTo": "500", "unitPrice": "0"},
        {"upTo": "2000", "unitPrice": "0.04"},
        {"upTo": None, "unitPrice": "0.03"},
    ]
    assert (pro[1]["unitPrice"], pro[1]["where"]) == ("0.000003", {"model": "large-1"})
    assert (pro[2]["packageSize"], pro[2]["packagePrice"]) == ("1000000", "0.5")
    team = plans["team"]["charges"][1]
    assert (team["included"], team["minimum"]) == ("500", "5")


async def test_customer_list_costs_the_same_queries_for_any_page_size(
    client: httpx.AsyncClient, catalog: None, token_for, sent_statements: list[str]
) -> None:
    """Nested plan fields load through DataLoaders: no query per customer."""
    token = await token_for("admin")
    for index in range(12):
        await create(client, token, externalId=f"q_{index}", name=f"Q {index}", currency="USD", planKey="pro")
    query = "query($n: Int) { customers(first: $n) { edges { node { id subscription { plan { key charges { model } } } } } } }"
    counts = []
    for size in (2, 12):
        sent_statements.clear()
        response = await graphql(client, token, query, {"n": size})
        assert len(response.json()["data"]["customers"]["edges"]) == size
        counts.append(len(sent_statements))
    assert counts[0] == counts[1], counts
    assert 0 < counts[0] <= 6, counts


async def test_root_fields_on_a_session_without_a_connection_yet(sessions, settings: Settings) -> None:
    """Root fields resolve concurrently on one session; on a session that holds no connection (a
    fresh one, or one whose mutation has just committed) they must not race to provision one."""
    from app.api.context import TallyContext
    from app.auth import Role, Viewer

    schema = build_schema(settings)
    async with sessions() as fresh:
        context = TallyContext(session=fresh, viewer=Viewer(role=Role.ADMIN, actor="test"), settings=settings)
        result = await schema.execute(
            "{ reconciliationRuns { checked } reconciliationDiscrepancies { id } plans { key } }",
            context_value=context,
        )
    assert result.errors is None
    assert result.data == {"reconciliationRuns": [], "reconciliationDiscrepancies": [], "plans": []}
