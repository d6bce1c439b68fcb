"""Each newer pricing model billed end to end on a real server: the catalog applied with `tally
catalog apply`, events sent to `POST /v1/events`, `tally billing run`, and the invoice's usage lines
read over GraphQL, checked against amounts worked out by hand. A day-based plan changed mid-day
shows the change day counted as used."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import TALLY, server_env, start_server

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
STARTED = (NOW - timedelta(days=40)).replace(hour=0, minute=0, second=0)
IN_PERIOD = STARTED + timedelta(days=20, hours=10)  # inside the first period, within the events' age window

CATALOG = """
[[meters]]
key = "calls"
name = "Calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[meters]]
key = "payments"
name = "Payments"
unit = "USD"
event_type = "payment.settled"
aggregation = "sum"
value_property = "amount"

[[plans]]
key = "volume-flat"
name = "Volume with flat fees"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "calls"
  model = "volume"
  tiers = [{ up_to = 5, unit_price = "7" }, { up_to = 10, unit_price = "6", flat_fee = "30" }, { up_to = "inf", unit_price = "5", flat_fee = "60" }]

[[plans]]
key = "graduated-flat"
name = "Graduated with flat fees"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "calls"
  model = "graduated"
  tiers = [{ up_to = 2, unit_price = "1", flat_fee = "5" }, { up_to = 4, unit_price = "0.5", flat_fee = "10" }, { up_to = "inf", unit_price = "0.1", flat_fee = "20" }]

[[plans]]
key = "steps"
name = "Stair steps"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "calls"
  model = "stair_step"
  tiers = [{ up_to = 3, flat_fee = "100" }, { up_to = 10, flat_fee = "300" }, { up_to = "inf", flat_fee = "500" }]

[[plans]]
key = "packs"
name = "Whole packages"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "calls"
  model = "package"
  package_size = 4
  package_price = "2.50"
  rounding = "down"

[[plans]]
key = "payments"
name = "Payments"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "payments"
  model = "percentage"
  rate = "2.99"
  fixed_fee = "2"
  free_events = 1
  per_event_minimum = "1.75"
  per_event_maximum = "12"

[[plans]]
key = "daily"
name = "Daily"
currency = "USD"
interval = "month"
base_fee = "30.00"
proration = "day"

[[plans]]
key = "daily-plus"
name = "Daily plus"
currency = "USD"
interval = "month"
base_fee = "100.00"
proration = "day"
"""


@dataclass(frozen=True)
class Server:
    base_url: str
    env: dict[str, str]
    admin: str
    ingest: str

    def cli(self, *args: str) -> str:
        result = subprocess.run([str(TALLY), *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        answer = response.json()
        assert "errors" not in answer, answer
        return answer["data"]

    def send(self, events: list[dict[str, Any]]) -> None:
        response = httpx.post(
            f"{self.base_url}/v1/events", json=events, headers={"Authorization": f"Bearer {self.ingest}"}, timeout=30
        )
        assert response.status_code == 200 and response.json()["rejected"] == [], response.text


CUSTOMERS = {
    "org_volume": "volume-flat",
    "org_graduated": "graduated-flat",
    "org_steps": "steps",
    "org_packs": "packs",
    "org_payments": "payments",
    "org_daily": "daily",
}


@pytest.fixture(scope="module")
def billed(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own without background jobs; customers that started 40 days ago, their
    usage inside the first (closed) period, and one billing run."""
    url = clone_database(server_url, "tally_models")
    data_dir = tmp_path_factory.mktemp("models")
    env = {**server_env(url, data_dir), "TALLY_BACKDATE_MAX_DAYS": "90"}
    process, base_url = start_server(env, data_dir / "serve.log", "--no-jobs")
    try:
        catalog = data_dir / "catalog.toml"
        catalog.write_text(CATALOG)
        cli = Server(base_url, env, "", "").cli
        assert "plan payments: create version 1" in cli("catalog", "apply", str(catalog), "--dry-run")
        cli("catalog", "apply", str(catalog))
        server = Server(
            base_url, env, cli("token", "create", "--role", "admin"), cli("token", "create", "--role", "ingest")
        )
        for external_id, plan_key in CUSTOMERS.items():
            created = server.graphql(
                "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code message } } }",
                {
                    "i": {
                        "externalId": external_id,
                        "name": external_id,
                        "currency": "USD",
                        "planKey": plan_key,
                        "startedAt": STARTED.isoformat(),
                    }
                },
            )
            assert created["createCustomer"]["userErrors"] == []
        calls = {"org_volume": 6, "org_graduated": 5, "org_steps": 4, "org_packs": 11}
        events = [
            {
                "id": f"{customer}-{n}",
                "customer": customer,
                "type": "api.call",
                "timestamp": (IN_PERIOD + timedelta(minutes=n)).isoformat(),
                "properties": {},
            }
            for customer, count in calls.items()
            for n in range(count)
        ]
        events += [
            {
                "id": f"payment-{n}",
                "customer": "org_payments",
                "type": "payment.settled",
                "timestamp": (IN_PERIOD + timedelta(minutes=n)).isoformat(),
                "properties": {"amount": amount},
            }
            for n, amount in enumerate(["500", "10", "80", "10000"])
        ]
        server.send(events)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=20)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_models WITH (FORCE)")


def closing_lines(server: Server, external_id: str) -> list[dict[str, Any]]:
    invoices = server.graphql(
        """query($id: String!) { customer(externalId: $id) { invoices(first: 10) { edges { node {
             kind periodStart lines { kind description quantity amount { amount } } } } } } }""",
        {"id": external_id},
    )["customer"]["invoices"]["edges"]
    [closing] = [
        e["node"]
        for e in invoices
        if e["node"]["kind"] == "period" and e["node"]["periodStart"] <= IN_PERIOD.isoformat()
    ]
    return closing["lines"]


def usage_amounts(server: Server, external_id: str) -> list[tuple[str, Decimal]]:
    return [
        (line["quantity"], Decimal(line["amount"]["amount"]))
        for line in closing_lines(server, external_id)
        if line["kind"] == "USAGE"
    ]


@pytest.fixture(scope="module")
def run(billed: Server) -> Server:
    report = json.loads(billed.cli("billing", "run", "--json"))
    assert report["invoicesIssued"] >= len(CUSTOMERS)
    return billed


def test_volume_with_a_flat_fee(run: Server) -> None:
    # 6 calls reach the 6-10 tier: 6 × 6 + 30 flat = 66 (36 without the flat fee).
    assert usage_amounts(run, "org_volume") == [("6", Decimal("66.00"))]


def test_graduated_with_flat_fees(run: Server) -> None:
    # 5 calls: 2 × 1 + 5, then 2 × 0.5 + 10, then 1 × 0.1 + 20 = 7 + 11 + 20.1 = 38.10
    assert usage_amounts(run, "org_graduated") == [("5", Decimal("38.10"))]


def test_stair_step(run: Server) -> None:
    # 4 calls fall in the 4-10 step: 300, whatever the count inside it.
    assert usage_amounts(run, "org_steps") == [("4", Decimal("300.00"))]


def test_package_rounded_down(run: Server) -> None:
    # 11 calls are 2 whole packages of 4 (the 3 left over are free): 2 × 2.50 = 5.00
    assert usage_amounts(run, "org_packs") == [("11", Decimal("5.00"))]


def test_percentage_event_by_event(run: Server) -> None:
    # Events 500 (free: the first event), then 10, 80 and 10000 at 2.99% + 2 each, kept within
    # 1.75 and 12: 10 × 0.0299 + 2 = 2.299; 80 × 0.0299 + 2 = 4.392; 10000 × 0.0299 + 2 → 12.
    # 2.299 + 4.392 + 12 = 18.691 → 18.69. The line's quantity is the meter's sum, 10590.
    assert usage_amounts(run, "org_payments") == [("10590", Decimal("18.69"))]


def test_a_day_based_plan_counts_the_change_day_as_used(run: Server) -> None:
    """daily (30.00) → daily-plus (100.00) during the 6th day of the current period: 6 days used
    on daily, the rest on daily-plus, each line whole days over the period's days."""
    overview = run.graphql(
        'query { customer(externalId: "org_daily") { id subscription { currentPeriodStart currentPeriodEnd } } }'
    )["customer"]
    start = datetime.fromisoformat(overview["subscription"]["currentPeriodStart"])
    end = datetime.fromisoformat(overview["subscription"]["currentPeriodEnd"])
    at = start + timedelta(days=5, hours=15)
    assert at < NOW, "the customers started 40 days ago: their current period began 9 or 10 days ago"
    changed = run.graphql(
        """mutation($i: ChangePlanInput!) { changePlan(input: $i) {
             prorations { description amount { amount } } userErrors { code message } } }""",
        {
            "i": {
                "customerId": overview["id"],
                "planKey": "daily-plus",
                "effective": "IMMEDIATELY",
                "at": at.isoformat(),
                "idempotencyKey": f"e2e-{uuid.uuid4()}",
            }
        },
    )["changePlan"]
    assert changed["userErrors"] == []
    days = (end - start).days
    remaining = Decimal(days - 6)
    expected = [
        (-Decimal(30) * remaining / days).quantize(Decimal("0.01")),
        (Decimal(100) * remaining / days).quantize(Decimal("0.01")),
    ]
    assert [Decimal(p["amount"]["amount"]) for p in changed["prorations"]] == expected
