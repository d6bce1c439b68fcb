"""One-off charges and commitments through GraphQL: dry runs that answer the amounts, retries,
refusals as field errors that write nothing, who may charge, and what a customer reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.conftest import graphql

ERRORS = "userErrors { field code message }"
INVOICE = "invoice { number kind total { amount currency } amountDue { amount } lines { kind description } }"
CHARGE = f"""mutation($input: CreateOneOffChargeInput!) {{ createOneOffCharge(input: $input) {{
  charge {{ id description quantity unitPrice amount {{ amount currency }} when status actor }}
  {INVOICE} amount {{ amount }} creditsApplied {{ amount }} amountDue {{ amount }} {ERRORS} }} }}"""
CANCEL = f"""mutation($input: CancelOneOffChargeInput!) {{ cancelOneOffCharge(input: $input) {{
  charge {{ id status cancelReason }} {ERRORS} }} }}"""
COMMIT = f"""mutation($input: CreatePrepaidCommitmentInput!) {{ createPrepaidCommitment(input: $input) {{
  commitment {{ id amount {{ amount }} remaining {{ amount }} status priority endsAt }} {INVOICE}
  amount {{ amount currency }} {ERRORS} }} }}"""
MINIMUM = f"""mutation($input: SetMinimumSpendInput!) {{ setMinimumSpend(input: $input) {{
  setting {{ amount {{ amount }} effectiveAt reason actor }} {ERRORS} }} }}"""
CUSTOMER = """query($id: ID!) { customer(id: $id) {
  oneOffCharges(first: 10) { edges { node { description status actor amount { amount }
                                          invoice { number kind } } } }
  pending: oneOffCharges(status: [PENDING]) { edges { node { description } } }
  prepaidCommitments { edges { node { amount { amount } remaining { amount } status invoice { kind } } } }
  minimumSpend { amount { amount } source settings { amount { amount } reason actor } }
  upcomingInvoice { lines { kind description amount { amount } } } } }"""
WRITES = ("one_off_charges", "prepaid_commitments", "minimum_spends", "invoices", "ledger_transactions")


async def counts(session: AsyncSession) -> dict[str, int]:
    return {table: (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() for table in WRITES}


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


@pytest.fixture
async def customer(client: httpx.AsyncClient, catalog: None, token_for) -> str:
    admin = await token_for("admin")
    created = await ask(
        client,
        admin,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {"i": {"externalId": "org_extras", "name": "Extras", "currency": "USD", "planKey": "pro"}},
    )
    return created["createCustomer"]["customer"]["id"]


def charge_input(customer_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "customerId": customer_id,
        "description": "Setup fee",
        "quantity": "2",
        "unitPrice": "49.995",
        "currency": "USD",
        "idempotencyKey": "setup-1",
        **changes,
    }


async def test_a_charge_now_previewed_then_made_then_retried(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    before = await counts(session)
    preview = (await ask(client, finance, CHARGE, {"input": charge_input(customer, dryRun=True)}))["createOneOffCharge"]
    assert preview["userErrors"] == [] and preview["invoice"] is None
    assert (preview["amount"], preview["creditsApplied"], preview["amountDue"]) == (
        {"amount": "99.99"},
        {"amount": "0.00"},
        {"amount": "99.99"},
    )
    assert await counts(session) == before, "a dry run writes nothing"

    made = (await ask(client, finance, CHARGE, {"input": charge_input(customer)}))["createOneOffCharge"]
    assert made["userErrors"] == []
    assert made["charge"]["status"] == "INVOICED" and made["charge"]["actor"].startswith("token:")
    assert made["invoice"]["kind"] == "one_off" and made["invoice"]["total"] == {"amount": "99.99", "currency": "USD"}
    assert made["invoice"]["lines"] == [{"kind": "ONE_OFF", "description": "Setup fee"}]
    assert made["amountDue"] == preview["amountDue"], "the dry run said what it would post"
    retried = (await ask(client, finance, CHARGE, {"input": charge_input(customer)}))["createOneOffCharge"]
    assert retried["invoice"]["number"] == made["invoice"]["number"]
    reused = (await ask(client, finance, CHARGE, {"input": charge_input(customer, quantity="3")}))["createOneOffCharge"]
    assert [(e["field"], e["code"]) for e in reused["userErrors"]] == [(["idempotencyKey"], "IDEMPOTENCY_KEY_REUSED")]


async def test_pending_charges_commitments_and_minimums_read_on_the_customer(
    client: httpx.AsyncClient, customer: str, token_for
) -> None:
    finance = await token_for("finance")
    pending = (
        await ask(client, finance, CHARGE, {"input": charge_input(customer, when="NEXT_INVOICE", idempotencyKey="p")})
    )["createOneOffCharge"]
    assert (pending["charge"]["status"], pending["invoice"], pending["amountDue"]) == ("PENDING", None, None)
    extra = {"description": "Training", "unitPrice": "10", "quantity": "1"}
    other = (
        await ask(
            client,
            finance,
            CHARGE,
            {"input": charge_input(customer, when="NEXT_INVOICE", idempotencyKey="t", **extra)},
        )
    )["createOneOffCharge"]
    canceled = (
        await ask(
            client,
            finance,
            CANCEL,
            {"input": {"chargeId": other["charge"]["id"], "reason": "duplicate", "idempotencyKey": "c"}},
        )
    )["cancelOneOffCharge"]
    assert canceled == {
        "charge": {"id": other["charge"]["id"], "status": "CANCELED", "cancelReason": "duplicate"},
        "userErrors": [],
    }
    ends = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    commitment = {"customerId": customer, "amount": "1200", "currency": "USD", "endsAt": ends, "idempotencyKey": "y1"}
    preview = (await ask(client, finance, COMMIT, {"input": {**commitment, "dryRun": True}}))["createPrepaidCommitment"]
    assert (preview["amount"], preview["invoice"]) == ({"amount": "1200.00", "currency": "USD"}, None)
    made = (await ask(client, finance, COMMIT, {"input": commitment}))["createPrepaidCommitment"]
    assert made["userErrors"] == [] and made["invoice"]["amountDue"] == {"amount": "1200.00"}
    assert made["commitment"]["status"] == "ACTIVE" and made["commitment"]["remaining"] == {"amount": "1200.00"}
    minimum = (
        await ask(
            client,
            finance,
            MINIMUM,
            {"input": {"customerId": customer, "amount": "150", "reason": "contract", "idempotencyKey": "m1"}},
        )
    )["setMinimumSpend"]
    assert minimum["userErrors"] == [] and minimum["setting"]["amount"] == {"amount": "150.00"}

    read = (await ask(client, finance, CUSTOMER, {"id": customer}))["customer"]
    assert [(e["node"]["description"], e["node"]["status"]) for e in read["oneOffCharges"]["edges"]] == [
        ("Training", "CANCELED"),
        ("Setup fee", "PENDING"),
    ]
    assert [e["node"]["description"] for e in read["pending"]["edges"]] == ["Setup fee"]
    [commitment_read] = [e["node"] for e in read["prepaidCommitments"]["edges"]]
    assert commitment_read["invoice"] == {"kind": "commitment"} and commitment_read["status"] == "ACTIVE"
    assert read["minimumSpend"]["amount"] == {"amount": "150.00"} and read["minimumSpend"]["source"] == "SUBSCRIPTION"
    upcoming = [(line["kind"], line["description"]) for line in read["upcomingInvoice"]["lines"]]
    assert ("ONE_OFF", "Setup fee") in upcoming and ("ONE_OFF", "Training") not in upcoming
    assert ("MINIMUM_SPEND", "Minimum spend true-up") in upcoming

    own = await token_for("customer", "org_extras")
    mine = (await ask(client, own, CUSTOMER, {"id": customer}))["customer"]
    assert {e["node"]["actor"] for e in mine["oneOffCharges"]["edges"]} == {None}, "who charged is staff-only"
    forbidden = (await graphql(client, own, CHARGE, {"input": charge_input(customer, idempotencyKey="x")})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    support = await token_for("support")
    refused = (await graphql(client, support, CHARGE, {"input": charge_input(customer, idempotencyKey="x")})).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN", "charging is finance's"


BAD_CHARGES = [
    ({"currency": "EUR"}, "currency", "CURRENCY_MISMATCH"),
    ({"currency": "XXX"}, "currency", "INVALID"),
    ({"quantity": "0"}, "quantity", "INVALID"),
    ({"quantity": "-1"}, "quantity", "INVALID"),
    ({"quantity": "10000000000"}, "quantity", "INVALID"),
    ({"quantity": "1e400"}, "quantity", "INVALID"),
    ({"unitPrice": "-5"}, "unitPrice", "INVALID"),
    ({"unitPrice": "0.0000000000001"}, "unitPrice", "INVALID"),
    ({"unitPrice": "0.001"}, "unitPrice", "INVALID"),  # 2 x 0.001 rounds to nothing
    ({"unitPrice": "99999999999999999999"}, "unitPrice", "INVALID"),
    ({"description": "  "}, "description", "INVALID"),
    ({"description": "x" * 501}, "description", "INVALID"),
    ({"idempotencyKey": ""}, "idempotencyKey", "INVALID"),
    ({"idempotencyKey": "k" * 256}, "idempotencyKey", "INVALID"),
    ({"customerId": "00000000-0000-0000-0000-000000000000"}, "customerId", "NOT_FOUND"),
]


@pytest.mark.parametrize(("change", "field", "code"), BAD_CHARGES)
async def test_a_bad_charge_is_a_field_error_that_writes_nothing(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession, change: dict, field: str, code: str
) -> None:
    finance = await token_for("finance")
    before = await counts(session)
    for when in ("NOW", "NEXT_INVOICE"):
        answer = await ask(client, finance, CHARGE, {"input": charge_input(customer, when=when, **change)})
        errors = answer["createOneOffCharge"]["userErrors"]
        assert [(e["field"], e["code"]) for e in errors] == [([field], code)], errors
        assert answer["createOneOffCharge"]["charge"] is None
    assert await counts(session) == before


async def test_more_refusals_that_write_nothing(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    walk_in = (
        await ask(
            client,
            finance,
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } } }",
            {"i": {"externalId": "walk_in", "name": "Walk-in", "currency": "USD"}},
        )
    )["createCustomer"]["customer"]["id"]
    before = await counts(session)
    ends = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    commitment = {"customerId": customer, "amount": "100", "currency": "USD", "endsAt": ends, "idempotencyKey": "y"}
    refusals = [
        (CHARGE, charge_input(walk_in, when="NEXT_INVOICE"), "when", "NO_SUBSCRIPTION"),
        (COMMIT, {**commitment, "currency": "EUR"}, "currency", "CURRENCY_MISMATCH"),
        (COMMIT, {**commitment, "amount": "0"}, "amount", "INVALID"),
        (COMMIT, {**commitment, "amount": "1.005"}, "amount", "INVALID"),
        (COMMIT, {**commitment, "endsAt": past}, "endsAt", "INVALID"),
        (COMMIT, {**commitment, "startsAt": "2001-01-01T00:00:00Z"}, "startsAt", "INVALID"),
        (COMMIT, {**commitment, "priority": -1}, "priority", "INVALID"),
        (
            MINIMUM,
            {"customerId": walk_in, "amount": "10", "reason": "r", "idempotencyKey": "m"},
            "customerId",
            "NO_SUBSCRIPTION",
        ),
        (MINIMUM, {"customerId": customer, "amount": "-1", "reason": "r", "idempotencyKey": "m"}, "amount", "INVALID"),
        (MINIMUM, {"customerId": customer, "amount": "1", "reason": " ", "idempotencyKey": "m"}, "reason", "INVALID"),
        (CANCEL, {"chargeId": "nope", "reason": "r", "idempotencyKey": "c"}, "chargeId", "NOT_FOUND"),
    ]
    for query, values, field, code in refusals:
        data = await ask(client, finance, query, {"input": values})
        [payload] = data.values()
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [([field], code)], (values, payload)
    assert await counts(session) == before
