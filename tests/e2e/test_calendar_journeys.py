"""A trial over HTTP on a real server: subscribe with a trial, see it on the subscription, extend
it, preview its end (a dry run), end it, and find the invoice it issued: the first paid period's
base fee. The operations are graphql/operations/calendar.graphql's, as the console sends them."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from graphql import OperationDefinitionNode, parse, print_ast

from tests.e2e.conftest import TALLY, LiveServer, catalog_server, graphql_data

pytestmark = pytest.mark.e2e

DOCUMENTS = {
    definition.name.value: print_ast(definition)
    for definition in parse(
        (Path(__file__).resolve().parents[2] / "graphql/operations/calendar.graphql").read_text()
    ).definitions
    if isinstance(definition, OperationDefinitionNode) and definition.name
}
INVOICES = """query($id: ID!) { customer(id: $id) { invoices(first: 10) { edges { node {
  number kind periodEnd total { amount } lines { kind description amount { amount } } } } } } }"""


@pytest.fixture(scope="module")
def calendar_server(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with catalog_server(server_url, tmp_path_factory, "tally_calendar_live") as server:
        yield server


def test_a_trial_subscribed_ended_and_invoiced_over_http(calendar_server: LiveServer) -> None:
    live_server = calendar_server
    admin = live_server.cli("token", "create", "--role", "admin").strip()
    external_id = f"trial-{uuid.uuid4().hex[:8]}"
    created = graphql_data(
        live_server,
        admin,
        DOCUMENTS["CreateCustomerWithTrial"],
        {
            "input": {
                "externalId": external_id,
                "name": "Trial Co",
                "currency": "USD",
                "planKey": "pro",
                "trialDays": 14,
            }
        },
    )["createCustomer"]
    assert created["userErrors"] == []
    customer_id, subscription = created["customer"]["id"], created["customer"]["subscription"]
    started = datetime.fromisoformat(subscription["startedAt"])
    assert subscription["inTrial"] and subscription["interval"] == "MONTH"
    assert datetime.fromisoformat(subscription["trialEndsAt"]) == started + timedelta(days=14)
    assert subscription["currentPeriodEnd"] == subscription["trialEndsAt"] == subscription["billingAnchor"]

    bad = graphql_data(
        live_server,
        admin,
        DOCUMENTS["ExtendTrial"],
        {"input": {"customerId": customer_id, "until": started.isoformat(), "idempotencyKey": f"{external_id}-bad"}},
    )
    assert [(e["field"], e["code"]) for e in bad["extendTrial"]["userErrors"]] == [(["until"], "INVALID")]
    until = (started + timedelta(days=21)).isoformat()
    extended = graphql_data(
        live_server,
        admin,
        DOCUMENTS["ExtendTrial"],
        {"input": {"customerId": customer_id, "until": until, "idempotencyKey": f"{external_id}-extend"}},
    )["extendTrial"]
    assert (
        extended["userErrors"] == []
        and extended["subscription"]["currentPeriodEnd"] == extended["subscription"]["trialEndsAt"]
    )

    end = {"customerId": customer_id, "idempotencyKey": f"{external_id}-end"}
    preview = graphql_data(live_server, admin, DOCUMENTS["EndTrial"], {"input": {**end, "dryRun": True}})["endTrial"]
    ended = graphql_data(live_server, admin, DOCUMENTS["EndTrial"], {"input": end})["endTrial"]
    assert preview["userErrors"] == ended["userErrors"] == []
    assert [i["number"] for i in preview["invoices"]] == [None] * len(preview["invoices"])
    trial_invoice = ended["invoices"][-1]
    assert trial_invoice["number"].startswith("INV-") and trial_invoice["kind"] == "period"
    assert [line["kind"] for line in trial_invoice["lines"]] == ["BASE_FEE"]
    assert trial_invoice["total"] == {"amount": "20.00", "currency": "USD"}
    assert [i["total"] for i in preview["invoices"]] == [i["total"] for i in ended["invoices"]]
    assert not ended["subscription"]["inTrial"]
    first_paid_start = datetime.fromisoformat(ended["subscription"]["currentPeriodStart"])
    assert abs(first_paid_start - datetime.now(UTC)) < timedelta(minutes=5)

    invoices = graphql_data(live_server, admin, INVOICES, {"id": customer_id})["customer"]["invoices"]["edges"]
    assert trial_invoice["number"] in [edge["node"]["number"] for edge in invoices]
    again = graphql_data(live_server, admin, DOCUMENTS["EndTrial"], {"input": end})["endTrial"]
    assert again["userErrors"] == []
    numbers = [i["number"] for i in ended["invoices"]]
    assert [i["number"] for i in again["invoices"]] == numbers, "a retry returns the first result"
    over = graphql_data(
        live_server, admin, DOCUMENTS["EndTrial"], {"input": {**end, "idempotencyKey": f"{external_id}-2"}}
    )
    assert [(e["field"], e["code"]) for e in over["endTrial"]["userErrors"]] == [(["customerId"], "TRIAL_ENDED")]


def test_an_operator_ends_a_trial_from_the_command_line(calendar_server: LiveServer) -> None:
    live_server = calendar_server
    import json

    admin = live_server.cli("token", "create", "--role", "admin").strip()
    external_id = f"trial-cli-{uuid.uuid4().hex[:8]}"
    created = graphql_data(
        live_server,
        admin,
        DOCUMENTS["CreateCustomerWithTrial"],
        {"input": {"externalId": external_id, "name": "CLI Co", "currency": "USD", "planKey": "pro", "trialDays": 7}},
    )["createCustomer"]
    assert created["userErrors"] == []
    preview = json.loads(live_server.cli("trial", "end", external_id, "--dry-run", "--json"))
    ended = json.loads(live_server.cli("trial", "end", external_id, "--json"))
    assert preview["dryRun"] and [i["total"] for i in preview["invoices"]] == [i["total"] for i in ended["invoices"]]
    assert ended["invoices"][-1]["total"] == "20.00" and ended["invoices"][-1]["number"].startswith("INV-")
    refused = subprocess.run(
        [str(TALLY), "trial", "end", external_id, "--at", "2020-01-01T00:00:00Z"],
        env=live_server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "TRIAL_ENDED" not in refused.stderr and "customerId" in refused.stderr
