"""User journeys against a real server over real HTTP, and a real browser on the console."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.app.test_graphql_contract import contract_operations
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

CONTRACT_DOCUMENTS = dict(contract_operations())


def post_graphql(server: LiveServer, token: str, operation: str, variables: dict, **headers: str) -> dict:
    response = httpx.post(
        f"{server.base_url}/graphql",
        json={"query": CONTRACT_DOCUMENTS[operation], "operationName": operation, "variables": variables},
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_contract_create_customer_and_customers_on_a_running_server(live_server: LiveServer) -> None:
    token = live_server.cli("token", "create", "--role", "support").strip()
    created = post_graphql(
        live_server,
        token,
        "CreateCustomer",
        {
            "input": {
                "externalId": "org_e2e",
                "name": "End To End Ltd",
                "email": "ap@e2e.example",
                "currency": "USD",
                "planKey": "pro",
                "startedAt": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
            }
        },
    )
    assert created["data"]["createCustomer"]["userErrors"] == []
    assert created["data"]["createCustomer"]["customer"]["externalId"] == "org_e2e"
    again = post_graphql(
        live_server,
        token,
        "CreateCustomer",
        {
            "input": {
                "externalId": "org_e2e",
                "name": "Again",
                "currency": "USD",
            }
        },
    )
    assert again["data"]["createCustomer"]["userErrors"][0]["code"] == "TAKEN"
    listed = post_graphql(live_server, token, "Customers", {"search": "e2e", "first": 10})
    assert [e["node"]["name"] for e in listed["data"]["customers"]["edges"]] == ["End To End Ltd"]
    # The server is shared with other journeys, which may have added customers of their own.
    everyone = post_graphql(live_server, token, "Customers", {"first": 100})["data"]["customers"]
    external_ids = [edge["node"]["externalId"] for edge in everyone["edges"]]
    assert "org_e2e" in external_ids and len(external_ids) == len(set(external_ids)) >= 26
    assert everyone["pageInfo"]["hasNextPage"] is False


def test_a_producer_traceparent_becomes_the_parent_of_the_request_span(live_server: LiveServer) -> None:
    token = live_server.cli("token", "create", "--role", "viewer").strip()
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    post_graphql(live_server, token, "Customers", {"first": 1}, traceparent=f"00-{trace_id}-{parent_id}-01")
    query = "query($t: String!) { traceSpans(traceId: $t) { name parentSpanId attributes } }"
    spans: list[dict] = []
    deadline = time.monotonic() + 15
    while not spans and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = httpx.post(
            f"{live_server.base_url}/graphql",
            json={"query": query, "variables": {"t": trace_id}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        spans = answer["data"]["traceSpans"]
    assert spans, "spans reach the PostgreSQL span store in batches"
    roots = [span for span in spans if span["parentSpanId"] == parent_id]
    assert [span["name"] for span in roots] == ["POST /graphql"]
    names = {span["name"] for span in spans}
    assert any("SELECT" in name or "tally" in name for name in names), names
    assert all("password" not in str(span["attributes"]).lower() for span in spans)


def test_browser_journey_sign_in_search_open_customer(live_server: LiveServer, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{live_server.base_url}/console")
    assert "/console/login" in page.url
    page.fill("input[name=email]", live_server.admin_email)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong email or password" in page.inner_text("[role=alert]")
    page.fill("input[name=password]", live_server.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/overview")  # the landing page
    page.click("nav >> text=Customers")
    page.wait_for_url("**/console/customers")
    assert page.locator("#customer-rows tr").count() >= 25
    page.fill("input[type=search]", "globex")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    assert "search=globex" in page.url, "the search is in the address bar, so it can be shared"
    page.click("#customer-rows a")
    page.wait_for_selector("h1:has-text('Globex Analytics')")
    assert "Overview" in page.inner_text("main")
    assert "Pro" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "customer.png"))
    page.click("nav >> text=Traces")
    page.wait_for_url("**/console/traces")
    page.click("#trace-rows a >> nth=0")
    page.wait_for_selector(".waterfall .span-row")
    assert page.locator(".span-bar").count() >= 1
    page.close()
