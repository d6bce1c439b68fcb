"""A subscription's lifecycle over HTTP on a real `tally serve`: cancel now, cancel at the
period's end and resume, pause and unpause, each through GraphQL, with the entitlement answered
over REST after every step (and usage refused once the subscription has ended)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer, graphql_data

pytestmark = pytest.mark.e2e

SUBSCRIPTION = "subscription { status cancelAt canceledAt cancelReason pausedAt currentPeriodEnd }"
CANCEL = f"""mutation($input: CancelSubscriptionInput!) {{ cancelSubscription(input: $input) {{
  {SUBSCRIPTION} effectiveAt prorations {{ description amount {{ amount currency }} }}
  finalInvoice {{ total {{ amount currency }} lines {{ kind description amount {{ amount }} }} }}
  issuedInvoices {{ number kind total {{ amount }} }} event {{ kind timing status reason actor }}
  userErrors {{ field code message }} }} }}"""
RESUME = f"""mutation($input: ResumeSubscriptionInput!) {{ resumeSubscription(input: $input) {{
  {SUBSCRIPTION} event {{ kind status }} userErrors {{ field code message }} }} }}"""
PAUSE = f"""mutation($input: PauseSubscriptionInput!) {{ pauseSubscription(input: $input) {{
  {SUBSCRIPTION} effectiveAt prorations {{ description amount {{ amount }} }} userErrors {{ field code message }} }} }}"""
UNPAUSE = f"""mutation($input: UnpauseSubscriptionInput!) {{ unpauseSubscription(input: $input) {{
  {SUBSCRIPTION} effectiveAt prorations {{ description amount {{ amount }} }} userErrors {{ field code message }} }} }}"""
CREATE = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { id externalId } userErrors { field code message } } }"""


def entitlement(server: LiveServer, token: str, external_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/v1/customers/{external_id}/entitlements/requests",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def new_customer(server: LiveServer, token: str) -> tuple[str, str]:
    external_id = f"life-{uuid.uuid4().hex[:8]}"
    created = graphql_data(
        server,
        token,
        CREATE,
        {"input": {"externalId": external_id, "name": external_id, "currency": "USD", "planKey": "pro"}},
    )["createCustomer"]
    assert created["userErrors"] == []
    return created["customer"]["id"], external_id


@pytest.fixture(scope="module")
def tokens(live_server: LiveServer) -> dict[str, str]:
    return {
        "finance": live_server.cli("token", "create", "--role", "finance").strip(),
        "edge": live_server.cli("token", "create", "--role", "edge").strip(),
        "viewer": live_server.cli("token", "create", "--role", "viewer").strip(),
    }


def test_cancel_immediately_issues_the_final_invoice_and_ends_entitlements(
    live_server: LiveServer, tokens: dict[str, str]
) -> None:
    finance = tokens["finance"]
    customer_id, external_id = new_customer(live_server, finance)
    assert entitlement(live_server, tokens["edge"], external_id)["allowed"] is True
    cancel = {
        "customerId": customer_id,
        "timing": "IMMEDIATELY",
        "reason": "e2e",
        "idempotencyKey": f"e2e-{uuid.uuid4()}",
    }
    preview = graphql_data(live_server, finance, CANCEL, {"input": {**cancel, "dryRun": True}})["cancelSubscription"]
    assert preview["userErrors"] == [] and preview["issuedInvoices"] == [] and preview["event"] is None
    assert preview["subscription"]["status"] == "CANCELED", "as the cancel would leave it"
    assert entitlement(live_server, tokens["edge"], external_id)["allowed"] is True, "the dry run changed nothing"
    done = graphql_data(live_server, finance, CANCEL, {"input": cancel})["cancelSubscription"]
    assert done["userErrors"] == [] and done["subscription"]["status"] == "CANCELED"
    assert done["event"] == {
        "kind": "CANCEL",
        "timing": "IMMEDIATELY",
        "status": "applied",
        "reason": "e2e",
        "actor": done["event"]["actor"],
    }
    assert [i["kind"] for i in done["issuedInvoices"]] == ["opening", "period"]
    final = done["finalInvoice"]
    assert (
        final["total"]["amount"]
        == done["issuedInvoices"][-1]["total"]["amount"]
        == preview["finalInvoice"]["total"]["amount"]
    )
    assert Decimal(final["total"]["amount"]) < 0, (
        "started moments ago: nearly all of the fee paid in advance is credited"
    )
    assert "PRORATION" in [line["kind"] for line in final["lines"]]
    assert "BASE_FEE" not in [line["kind"] for line in final["lines"]], "no next period's fee"
    answer = entitlement(live_server, tokens["edge"], external_id)
    assert (answer["allowed"], answer["reason"]) == (False, "SUBSCRIPTION_CANCELED")
    event = {
        "id": f"e2e-{uuid.uuid4()}",
        "customer": external_id,
        "type": "request.completed",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"model": "fast-1"},
    }
    sent = httpx.post(
        f"{live_server.base_url}/v1/events",
        json=[event],
        headers={"Authorization": f"Bearer {tokens['edge']}"},
        timeout=10,
    ).json()
    assert [r["code"] for r in sent["rejected"]] == ["SUBSCRIPTION_CANCELED"]
    again = graphql_data(live_server, finance, CANCEL, {"input": cancel})["cancelSubscription"]
    assert [i["number"] for i in again["issuedInvoices"]] == [i["number"] for i in done["issuedInvoices"]]
    twice = graphql_data(live_server, finance, CANCEL, {"input": {**cancel, "idempotencyKey": f"e2e-{uuid.uuid4()}"}})
    assert twice["cancelSubscription"]["userErrors"][0]["code"] == "ALREADY_CANCELED"
    assert twice["cancelSubscription"]["subscription"] is None


def test_cancel_at_period_end_then_resume_over_http(live_server: LiveServer, tokens: dict[str, str]) -> None:
    finance = tokens["finance"]
    customer_id, external_id = new_customer(live_server, finance)
    cancel = {"customerId": customer_id, "timing": "PERIOD_END", "idempotencyKey": f"e2e-{uuid.uuid4()}"}
    done = graphql_data(live_server, finance, CANCEL, {"input": cancel})["cancelSubscription"]
    subscription = done["subscription"]
    assert subscription["status"] == "ACTIVE" and subscription["cancelAt"] == subscription["currentPeriodEnd"]
    assert done["issuedInvoices"] == [] and done["event"]["status"] == "scheduled"
    assert not any(line["kind"] == "BASE_FEE" for line in done["finalInvoice"]["lines"]), "no next period's fee"
    answer = entitlement(live_server, tokens["edge"], external_id)
    assert (answer["allowed"], answer["reason"]) == (True, None), "entitlements stop at the end, not before"
    refused = httpx.post(
        f"{live_server.base_url}/graphql",
        json={"query": RESUME, "variables": {"input": {"customerId": customer_id, "idempotencyKey": "viewer"}}},
        headers={"Authorization": f"Bearer {tokens['viewer']}"},
        timeout=10,
    ).json()
    assert refused["errors"] and refused["data"] is None, "a viewer may not resume"
    resumed = graphql_data(
        live_server, finance, RESUME, {"input": {"customerId": customer_id, "idempotencyKey": f"e2e-{uuid.uuid4()}"}}
    )
    assert resumed["resumeSubscription"]["subscription"]["cancelAt"] is None
    assert resumed["resumeSubscription"]["event"] == {"kind": "RESUME", "status": "applied"}
    answer = entitlement(live_server, tokens["edge"], external_id)
    assert (answer["allowed"], answer["reason"]) == (True, None)
    nothing = graphql_data(
        live_server, finance, RESUME, {"input": {"customerId": customer_id, "idempotencyKey": f"e2e-{uuid.uuid4()}"}}
    )
    assert nothing["resumeSubscription"]["userErrors"] == [
        {
            "field": ["customerId"],
            "code": "NOTHING_SCHEDULED",
            "message": "no cancel is scheduled: there is nothing to resume",
        }
    ]


def test_pause_and_unpause_over_http(live_server: LiveServer, tokens: dict[str, str]) -> None:
    finance = tokens["finance"]
    customer_id, external_id = new_customer(live_server, finance)
    pause = {"customerId": customer_id, "idempotencyKey": f"e2e-{uuid.uuid4()}"}
    preview = graphql_data(live_server, finance, PAUSE, {"input": {**pause, "dryRun": True}})["pauseSubscription"]
    assert preview["userErrors"] == [] and preview["prorations"][0]["description"].startswith("Unused time on Pro v1")
    assert entitlement(live_server, tokens["edge"], external_id)["allowed"] is True
    paused = graphql_data(live_server, finance, PAUSE, {"input": pause})["pauseSubscription"]
    assert paused["subscription"]["status"] == "PAUSED" and paused["subscription"]["pausedAt"] == paused["effectiveAt"]
    answer = entitlement(live_server, tokens["edge"], external_id)
    assert (answer["allowed"], answer["reason"]) == (False, "SUBSCRIPTION_PAUSED")
    twice = graphql_data(live_server, finance, PAUSE, {"input": {**pause, "idempotencyKey": f"e2e-{uuid.uuid4()}"}})
    assert twice["pauseSubscription"]["userErrors"][0]["code"] == "ALREADY_PAUSED"
    unpause = {"customerId": customer_id, "idempotencyKey": f"e2e-{uuid.uuid4()}"}
    unpaused = graphql_data(live_server, finance, UNPAUSE, {"input": unpause})["unpauseSubscription"]
    assert unpaused["subscription"]["status"] == "ACTIVE" and unpaused["subscription"]["pausedAt"] is None
    assert [p["description"].split(" (")[0] for p in unpaused["prorations"]] == [
        "Unused time on Pro v1",
        "Remaining time on Pro v1",
    ]
    answer = entitlement(live_server, tokens["edge"], external_id)
    assert (answer["allowed"], answer["reason"]) == (True, None)
    again = graphql_data(live_server, finance, UNPAUSE, {"input": {**unpause, "idempotencyKey": f"e2e-{uuid.uuid4()}"}})
    assert again["unpauseSubscription"]["userErrors"][0]["code"] == "NOT_PAUSED"
