"""One-off charges and a prepaid commitment over HTTP against a running `tally serve` (its own): a finance
token charges, previews, retries and cancels; the customer reads what they were charged; the
ledger verifies afterwards (`tally ledger verify`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.e2e.conftest import LiveServer, catalog_server, graphql_data

pytestmark = pytest.mark.e2e

ERRORS = "userErrors { field code message }"
CHARGE = f"""mutation($input: CreateOneOffChargeInput!) {{ createOneOffCharge(input: $input) {{
  charge {{ id status amount {{ amount currency }} }} invoice {{ number kind amountDue {{ amount }} }}
  amount {{ amount }} creditsApplied {{ amount }} amountDue {{ amount }} {ERRORS} }} }}"""
CANCEL = f"""mutation($input: CancelOneOffChargeInput!) {{ cancelOneOffCharge(input: $input) {{
  charge {{ status }} {ERRORS} }} }}"""
COMMIT = f"""mutation($input: CreatePrepaidCommitmentInput!) {{ createPrepaidCommitment(input: $input) {{
  commitment {{ id remaining {{ amount }} status }} invoice {{ number kind amountDue {{ amount }} }}
  amount {{ amount currency }} {ERRORS} }} }}"""
READ = """query($id: ID!) { customer(id: $id) {
  balance { credits { amount } outstanding { amount } }
  oneOffCharges { edges { node { description status actor invoice { number } } } }
  prepaidCommitments { edges { node { amount { amount } remaining { amount } status } } }
  upcomingInvoice { lines { kind description } } } }"""


@pytest.fixture(scope="module")
def live_server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with catalog_server(server_url, tmp_path_factory, "tally_live_extras") as server:
        yield server


def new_customer(server: LiveServer, admin: str) -> tuple[str, str]:
    external_id = f"org_extras_{uuid.uuid4().int % 10**12}"
    created = graphql_data(
        server,
        admin,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {"i": {"externalId": external_id, "name": "Extras journey", "currency": "USD", "planKey": "pro"}},
    )
    # Its opening invoice now, rather than at the server's next billing tick: what follows is then
    # this period's, whenever the tick comes.
    server.cli("billing", "run", "--json")
    return created["createCustomer"]["customer"]["id"], external_id


def test_one_off_charges_over_http(live_server: LiveServer) -> None:
    admin = live_server.cli("token", "create", "--role", "admin").strip()
    finance = live_server.cli("token", "create", "--role", "finance").strip()
    customer_id, external_id = new_customer(live_server, admin)
    charge = {
        "customerId": customer_id,
        "description": "Implementation package",
        "quantity": "4",
        "unitPrice": "125.125",
        "currency": "USD",
        "when": "NOW",
        "idempotencyKey": f"e2e-{uuid.uuid4()}",
    }
    preview = graphql_data(live_server, finance, CHARGE, {"input": {**charge, "dryRun": True}})["createOneOffCharge"]
    assert (preview["amount"], preview["amountDue"], preview["invoice"]) == (
        {"amount": "500.50"},
        {"amount": "500.50"},
        None,
    )
    made = graphql_data(live_server, finance, CHARGE, {"input": charge})["createOneOffCharge"]
    assert made["userErrors"] == [] and made["invoice"]["kind"] == "one_off"
    assert made["invoice"]["amountDue"] == preview["amountDue"], "the preview said what was posted"
    retried = graphql_data(live_server, finance, CHARGE, {"input": charge})["createOneOffCharge"]
    assert retried["invoice"]["number"] == made["invoice"]["number"], "a retry charges once"
    wrong = graphql_data(live_server, finance, CHARGE, {"input": {**charge, "currency": "EUR", "idempotencyKey": "x"}})
    assert [(e["field"], e["code"]) for e in wrong["createOneOffCharge"]["userErrors"]] == [
        (["currency"], "CURRENCY_MISMATCH")
    ]

    later = {
        **charge,
        "when": "NEXT_INVOICE",
        "description": "Extra seat pack",
        "idempotencyKey": f"e2e-{uuid.uuid4()}",
    }
    pending = graphql_data(live_server, finance, CHARGE, {"input": later})["createOneOffCharge"]
    assert pending["charge"]["status"] == "PENDING"
    undo = graphql_data(
        live_server,
        finance,
        CHARGE,
        {"input": {**later, "description": "Oops", "idempotencyKey": "e2e-oops-" + customer_id}},
    )
    customer = live_server.cli("token", "create", "--role", "customer", "--customer", external_id).strip()
    read = graphql_data(live_server, customer, READ, {"id": customer_id})["customer"]
    upcoming = [(line["kind"], line["description"]) for line in read["upcomingInvoice"]["lines"]]
    assert ("ONE_OFF", "Extra seat pack") in upcoming and ("ONE_OFF", "Oops") in upcoming
    canceled = graphql_data(
        live_server,
        finance,
        CANCEL,
        {
            "input": {
                "chargeId": undo["createOneOffCharge"]["charge"]["id"],
                "reason": "typo",
                "idempotencyKey": "c-" + customer_id,
            }
        },
    )["cancelOneOffCharge"]
    assert canceled == {"charge": {"status": "CANCELED"}, "userErrors": []}

    read = graphql_data(live_server, customer, READ, {"id": customer_id})["customer"]
    charges = [edge["node"] for edge in read["oneOffCharges"]["edges"]]
    assert [(c["description"], c["status"]) for c in charges] == [
        ("Oops", "CANCELED"),
        ("Extra seat pack", "PENDING"),
        ("Implementation package", "INVOICED"),
    ]
    assert {c["actor"] for c in charges} == {None}, "the customer does not read who charged"
    assert ("ONE_OFF", "Oops") not in [(line["kind"], line["description"]) for line in read["upcomingInvoice"]["lines"]]
    assert Decimal(read["balance"]["outstanding"]["amount"]) >= Decimal("500.50")
    listed = json.loads(live_server.cli("charge", "list", external_id, "--json"))
    assert [c["status"] for c in listed] == ["canceled", "pending", "invoiced"]
    assert json.loads(live_server.cli("ledger", "verify", "--json"))["ok"] is True


def test_a_prepaid_commitment_over_http(live_server: LiveServer) -> None:
    admin = live_server.cli("token", "create", "--role", "admin").strip()
    finance = live_server.cli("token", "create", "--role", "finance").strip()
    customer_id, external_id = new_customer(live_server, admin)
    commitment = {
        "customerId": customer_id,
        "amount": "2400.00",
        "currency": "USD",
        "endsAt": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        "priority": 50,
        "idempotencyKey": f"e2e-{uuid.uuid4()}",
    }
    preview = graphql_data(live_server, finance, COMMIT, {"input": {**commitment, "dryRun": True}})[
        "createPrepaidCommitment"
    ]
    assert (preview["amount"], preview["invoice"]) == ({"amount": "2400.00", "currency": "USD"}, None)
    made = graphql_data(live_server, finance, COMMIT, {"input": commitment})["createPrepaidCommitment"]
    assert made["userErrors"] == [] and made["invoice"]["kind"] == "commitment"
    assert made["invoice"]["amountDue"] == {"amount": "2400.00"}
    retried = graphql_data(live_server, finance, COMMIT, {"input": commitment})["createPrepaidCommitment"]
    assert retried["invoice"]["number"] == made["invoice"]["number"]

    customer = live_server.cli("token", "create", "--role", "customer", "--customer", external_id).strip()
    read = graphql_data(live_server, customer, READ, {"id": customer_id})["customer"]
    [mine] = [edge["node"] for edge in read["prepaidCommitments"]["edges"]]
    # The opening invoice was issued before the commitment: nothing has drawn on it yet.
    assert mine == {"amount": {"amount": "2400.00"}, "remaining": {"amount": "2400.00"}, "status": "ACTIVE"}
    assert Decimal(read["balance"]["credits"]["amount"]) == Decimal(mine["remaining"]["amount"])
    assert json.loads(live_server.cli("ledger", "verify", "--json"))["ok"] is True
