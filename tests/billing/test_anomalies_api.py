"""Anomalies through GraphQL: the contract's operation with real rows, the order finance reads
them in, filters and paging, acknowledging and resolving with a note, and who may do so."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding, raise_anomaly
from customers.service import NewCustomer, create_customer
from tests.app.test_graphql_contract import run_contract_operation as run
from tests.conftest import graphql

NOW = datetime.now(UTC).replace(microsecond=0)
LIST = """query($since: DateTime!, $first: Int, $after: String, $kind: AnomalyKind, $severity: AnomalySeverity,
  $status: AnomalyStatus) {
  anomalies(since: $since, first: $first, after: $after, kind: $kind, severity: $severity, status: $status) {
    edges { node { id kind severity status summary numbers windowStart windowEnd note statusBy statusAt
                   customer { externalId } } }
    pageInfo { hasNextPage endCursor } } }"""
ACKNOWLEDGE = """mutation($i: AcknowledgeAnomalyInput!) { acknowledgeAnomaly(input: $i) {
  anomaly { id status statusBy } userErrors { field code message } } }"""
RESOLVE = """mutation($i: ResolveAnomalyInput!) { resolveAnomaly(input: $i) {
  anomaly { id status note statusBy } userErrors { field code message } } }"""


def finding(kind: str, customer_id: uuid.UUID | None, severity: str, hours_ago: int) -> Finding:
    start = NOW - timedelta(hours=hours_ago)
    return Finding(
        kind=kind,
        customer_id=customer_id,
        window_start=start,
        window_end=start + timedelta(hours=1),
        severity=severity,
        summary=f"{kind} {hours_ago} h ago",
        numbers={"currency": "USD", "amount": 1250, "ratio": "3.5"},
    )


@pytest.fixture
async def planted(session: AsyncSession, catalog: None) -> dict[str, uuid.UUID | None]:
    """Five anomalies detected at different times; the ledger one is the oldest."""
    acme = await create_customer(
        session, NewCustomer(external_id="org_acme", name="Acme", currency="USD", plan_key="team"), as_of=NOW
    )
    for kind, customer, severity, hours_ago in (
        ("LEDGER_INVARIANT", None, "critical", 30),
        ("USAGE_SPIKE", acme.id, "medium", 1),
        ("DISPUTE", acme.id, "high", 2),
        ("QUARANTINE", None, "medium", 3),
        ("INVOICE_DELTA", acme.id, "high", 4),
    ):
        assert await raise_anomaly(
            session, finding(kind, customer, severity, hours_ago), as_of=NOW - timedelta(hours=hours_ago)
        )
    await session.commit()
    return {"acme": acme.id}


async def listed(client: httpx.AsyncClient, token: str, **variables: object) -> dict:
    since = (NOW - timedelta(days=7)).isoformat()
    body = (await graphql(client, token, LIST, {"since": since, **variables})).json()
    assert "errors" not in body, body
    return body["data"]["anomalies"]


async def test_the_contract_operation_lists_the_ledger_first_then_newest(
    client: httpx.AsyncClient, planted: dict, token_for
) -> None:
    finance = await token_for("finance")
    since = (NOW - timedelta(days=7)).isoformat()
    nodes = [e["node"] for e in (await run(client, finance, "Anomalies", {"since": since}))["anomalies"]["edges"]]
    assert [(n["kind"], n["severity"]) for n in nodes] == [
        ("LEDGER_INVARIANT", "CRITICAL"),
        ("USAGE_SPIKE", "MEDIUM"),
        ("DISPUTE", "HIGH"),
        ("QUARANTINE", "MEDIUM"),
        ("INVOICE_DELTA", "HIGH"),
    ]
    assert [n["customer"] and n["customer"]["externalId"] for n in nodes] == [
        None,
        "org_acme",
        "org_acme",
        None,
        "org_acme",
    ]
    assert nodes[1]["summary"] == "USAGE_SPIKE 1 h ago"
    assert datetime.fromisoformat(nodes[1]["detectedAt"]) == NOW - timedelta(hours=1)
    recent = (await run(client, finance, "Anomalies", {"since": (NOW - timedelta(hours=2)).isoformat()}))["anomalies"]
    assert [e["node"]["kind"] for e in recent["edges"]] == ["USAGE_SPIKE", "DISPUTE"]


async def test_paging_and_filters(client: httpx.AsyncClient, planted: dict, token_for) -> None:
    viewer = await token_for("viewer")
    seen, after = [], None
    while True:
        page = await listed(client, viewer, first=2, after=after)
        seen += [e["node"]["kind"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ["LEDGER_INVARIANT", "USAGE_SPIKE", "DISPUTE", "QUARANTINE", "INVOICE_DELTA"]
    high = await listed(client, viewer, severity="HIGH")
    assert [e["node"]["kind"] for e in high["edges"]] == ["DISPUTE", "INVOICE_DELTA"]
    disputes = await listed(client, viewer, kind="DISPUTE")
    node = disputes["edges"][0]["node"]
    assert json.loads(node["numbers"]) == {"amount": 1250, "currency": "USD", "ratio": "3.5"}
    assert datetime.fromisoformat(node["windowEnd"]) - datetime.fromisoformat(node["windowStart"]) == timedelta(hours=1)
    assert (node["status"], node["note"], node["statusBy"]) == ("OPEN", None, None)
    assert (await listed(client, viewer, status="RESOLVED"))["edges"] == []
    bad = (await graphql(client, viewer, LIST, {"since": NOW.isoformat(), "after": "nonsense"})).json()
    assert bad["errors"][0]["message"] == "after: not a cursor returned by this API"


async def test_acknowledge_then_resolve_with_a_note(client: httpx.AsyncClient, planted: dict, token_for) -> None:
    finance = await token_for("finance")
    spike = (await listed(client, finance, kind="USAGE_SPIKE"))["edges"][0]["node"]["id"]

    acknowledged = (await graphql(client, finance, ACKNOWLEDGE, {"i": {"anomalyId": spike}})).json()
    payload = acknowledged["data"]["acknowledgeAnomaly"]
    assert payload["userErrors"] == [] and payload["anomaly"]["status"] == "ACKNOWLEDGED"
    assert payload["anomaly"]["statusBy"].startswith("token:tly_")
    twice = (await graphql(client, finance, ACKNOWLEDGE, {"i": {"anomalyId": spike}})).json()
    assert twice["data"]["acknowledgeAnomaly"]["anomaly"]["status"] == "ACKNOWLEDGED"

    blank = (await graphql(client, finance, RESOLVE, {"i": {"anomalyId": spike, "note": "   "}})).json()
    assert blank["data"]["resolveAnomaly"] == {
        "anomaly": None,
        "userErrors": [
            {"field": ["note"], "code": "INVALID", "message": "say what was found or done: a resolution needs a note"}
        ],
    }
    note = "a customer load test, agreed with their account manager"
    resolved = (await graphql(client, finance, RESOLVE, {"i": {"anomalyId": spike, "note": note}})).json()
    assert resolved["data"]["resolveAnomaly"]["anomaly"]["status"] == "RESOLVED"
    assert resolved["data"]["resolveAnomaly"]["anomaly"]["note"] == note

    for query, variables in ((RESOLVE, {"anomalyId": spike, "note": "again"}), (ACKNOWLEDGE, {"anomalyId": spike})):
        refused = (await graphql(client, finance, query, {"i": variables})).json()["data"]
        errors = next(iter(refused.values()))["userErrors"]
        assert [(e["field"], e["code"]) for e in errors] == [(["anomalyId"], "ALREADY_RESOLVED")]
    node = (await listed(client, finance, status="RESOLVED"))["edges"][0]["node"]
    assert (node["id"], node["note"]) == (spike, note) and node["statusAt"] is not None

    for unknown in (str(uuid.uuid4()), "not-an-id"):
        missing = (await graphql(client, finance, ACKNOWLEDGE, {"i": {"anomalyId": unknown}})).json()
        assert missing["data"]["acknowledgeAnomaly"]["userErrors"][0]["code"] == "NOT_FOUND"


async def test_who_may_read_and_act(client: httpx.AsyncClient, planted: dict, token_for) -> None:
    viewer, support = await token_for("viewer"), await token_for("support")
    customer = await token_for("customer", "org_acme")
    spike = (await listed(client, viewer, kind="USAGE_SPIKE"))["edges"][0]["node"]["id"]
    for token in (viewer, support):
        refused = (await graphql(client, token, ACKNOWLEDGE, {"i": {"anomalyId": spike}})).json()
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    hidden = (await graphql(client, customer, LIST, {"since": NOW.isoformat()})).json()
    assert hidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await listed(client, viewer, kind="USAGE_SPIKE"))["edges"][0]["node"]["status"] == "OPEN"


async def test_the_list_costs_the_same_queries_for_any_page_size(
    client: httpx.AsyncClient, session: AsyncSession, catalog: None, token_for, sent_statements: list[str]
) -> None:
    """Customers load through a DataLoader: no query per anomaly."""
    for index in range(6):
        customer = await create_customer(
            session, NewCustomer(external_id=f"org_{index}", name=f"Org {index}", currency="USD"), as_of=NOW
        )
        await raise_anomaly(session, finding("USAGE_SPIKE", customer.id, "medium", index), as_of=NOW)
    await session.commit()
    finance = await token_for("finance")
    await listed(client, finance, first=1)  # the token is then remembered: no lookup in what is counted
    counts = []
    for size in (2, 6):
        sent_statements.clear()
        page = await listed(client, finance, first=size)
        assert len({e["node"]["customer"]["externalId"] for e in page["edges"]}) == size
        counts.append(len(sent_statements))
    assert counts[0] == counts[1] > 0, counts
