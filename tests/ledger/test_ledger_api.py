"""Credits and the ledger through GraphQL: the contract's operations, limits and refusals."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.app.test_graphql_contract import run_contract_operation as run
from tests.conftest import graphql

ADJUST = (
    """mutation($i: AdjustBalanceInput!) { adjustBalance(input: $i) { entryId userErrors { field code message } } }"""
)


@pytest.fixture
async def customer_id(client: httpx.AsyncClient, catalog: None, token_for) -> str:
    admin = await token_for("admin")
    created = await run(
        client, admin, "CreateCustomer", {"input": {"externalId": "org_credit", "name": "Credit Co", "currency": "EUR"}}
    )
    return created["createCustomer"]["customer"]["id"]


def grant_input(customer_id: str, amount: str, key: str, **extra: object) -> dict:
    return {
        "input": {"customerId": customer_id, "amount": amount, "reason": "onboarding", "idempotencyKey": key, **extra}
    }


async def test_grant_credits_then_read_grants_entries_and_balance(
    client: httpx.AsyncClient, customer_id: str, token_for, session: AsyncSession
) -> None:
    support = await token_for("support")
    granted = (await run(client, support, "GrantCredits", grant_input(customer_id, "25.50", "k-1", priority=5)))[
        "grantCredits"
    ]
    assert granted["userErrors"] == []
    assert granted["grant"]["amount"] == {"amount": "25.50", "currency": "EUR"}
    assert granted["grant"]["remaining"] == granted["grant"]["amount"] and granted["grant"]["priority"] == 5
    again = (await run(client, support, "GrantCredits", grant_input(customer_id, "25.50", "k-1", priority=5)))[
        "grantCredits"
    ]
    assert again["grant"]["id"] == granted["grant"]["id"], "same key, same request: the first result"
    told = await session.execute(text("SELECT resource_id, data FROM webhook_events WHERE type = 'credits.granted'"))
    [(grant_id, data)] = told.all()
    assert grant_id == granted["grant"]["id"] and data["amount"] == granted["grant"]["amount"], "told once"
    reused = (await run(client, support, "GrantCredits", grant_input(customer_id, "30", "k-1")))["grantCredits"]
    assert [e["code"] for e in reused["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]

    customer = await token_for("customer", "org_credit")
    grants = (await run(client, customer, "CreditGrants", {"externalId": "org_credit"}))["customer"]["creditGrants"]
    assert [(g["node"]["remaining"]["amount"], g["node"]["status"]) for g in grants["edges"]] == [("25.50", "ACTIVE")]
    assert grants["edges"][0]["node"]["reason"] == "Credits granted", "the customer reads the public description"
    overview = (await run(client, customer, "CustomerOverview", {"externalId": "org_credit"}))["customer"]
    assert overview["balance"]["credits"] == {"amount": "25.50", "currency": "EUR"}
    assert overview["balance"]["outstanding"]["amount"] == "0.00"
    entries = (await run(client, customer, "LedgerEntries", {"externalId": "org_credit", "first": 10}))["customer"]
    [entry] = entries["ledgerEntries"]["edges"]
    assert entry["node"]["kind"] == "credit_grant" and entry["node"]["amount"]["amount"] == "25.50"
    assert (entry["node"]["actor"], entry["node"]["description"]) == (None, "Credits granted"), "staff-only"
    staff = (await run(client, support, "LedgerEntries", {"externalId": "org_credit", "first": 10}))["customer"]
    [entry] = staff["ledgerEntries"]["edges"]
    assert entry["node"]["actor"].startswith("token:") and "onboarding" in entry["node"]["description"]


async def test_refusals_name_the_field_and_change_nothing(
    client: httpx.AsyncClient, customer_id: str, token_for, session: AsyncSession
) -> None:
    support = await token_for("support")
    finance = await token_for("finance")
    cases = [
        (support, grant_input(customer_id, "100.01", "a"), "LIMIT_EXCEEDED", "amount"),
        (finance, grant_input(customer_id, "0.001", "b"), "INVALID", "amount"),
        (finance, grant_input(customer_id, "0", "c"), "INVALID", "amount"),
        (finance, grant_input(customer_id, "-5", "d"), "INVALID", "amount"),
        (finance, grant_input(customer_id, "92233720368547758.08", "e"), "INVALID", "amount"),
        (finance, grant_input(customer_id, "5", "f", reason=" "), "INVALID", "reason"),
        (finance, grant_input(customer_id, "5", "g", expiresAt="2020-01-01T00:00:00Z"), "INVALID", "expiresAt"),
        (finance, grant_input("00000000-0000-0000-0000-000000000000", "5", "h"), "NOT_FOUND", "customerId"),
    ]
    for token, variables, code, field in cases:
        payload = (await run(client, token, "GrantCredits", variables))["grantCredits"]
        assert payload["grant"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [(code, [field])], variables
    assert (await session.execute(text("SELECT count(*) FROM ledger_transactions"))).scalar_one() == 0
    assert (
        await session.execute(text("SELECT count(*) FROM webhook_events WHERE type = 'credits.granted'"))
    ).scalar_one() == 0
    big = (await run(client, finance, "GrantCredits", grant_input(customer_id, "500", "ok")))["grantCredits"]
    assert big["userErrors"] == [], "finance has no per-grant limit"


async def test_adjustments_are_for_finance(client: httpx.AsyncClient, customer_id: str, token_for) -> None:
    support = await token_for("support")
    refused = (
        await graphql(
            client,
            support,
            ADJUST,
            {"i": {"customerId": customer_id, "amount": "10", "reason": "fee", "idempotencyKey": "a"}},
        )
    ).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    finance = await token_for("finance")
    done = (
        await graphql(
            client,
            finance,
            ADJUST,
            {"i": {"customerId": customer_id, "amount": "-12.34", "reason": "goodwill", "idempotencyKey": "b"}},
        )
    ).json()
    assert done["data"]["adjustBalance"]["userErrors"] == []
    viewer = await token_for("viewer")
    overview = (await run(client, viewer, "CustomerOverview", {"externalId": "org_credit"}))["customer"]
    assert overview["balance"]["outstanding"] == {"amount": "-12.34", "currency": "EUR"}


REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) { entryId userErrors { field code message } } }"""


async def test_finance_reverses_an_entry_once(client: httpx.AsyncClient, customer_id: str, token_for) -> None:
    finance = await token_for("finance")
    adjusted = (
        await graphql(
            client,
            finance,
            ADJUST,
            {"i": {"customerId": customer_id, "amount": "40", "reason": "wrong fee", "idempotencyKey": "adj"}},
        )
    ).json()
    entry = adjusted["data"]["adjustBalance"]["entryId"]
    first = (
        await graphql(
            client, finance, REVERSE, {"i": {"transactionId": entry, "reason": "fee waived", "idempotencyKey": "rev-1"}}
        )
    ).json()["data"]["reverseTransaction"]
    assert first["userErrors"] == [] and first["entryId"] != entry
    again = (
        await graphql(
            client, finance, REVERSE, {"i": {"transactionId": entry, "reason": "twice", "idempotencyKey": "rev-2"}}
        )
    ).json()["data"]["reverseTransaction"]
    assert [e["code"] for e in again["userErrors"]] == ["INVALID"]
    viewer = await token_for("viewer")
    overview = (await run(client, viewer, "CustomerOverview", {"externalId": "org_credit"}))["customer"]
    assert overview["balance"]["outstanding"]["amount"] == "0.00"
    support = await token_for("support")
    refused = (
        await graphql(
            client, support, REVERSE, {"i": {"transactionId": entry, "reason": "x", "idempotencyKey": "rev-3"}}
        )
    ).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    "amount",
    [
        "1.0000000000000000000000000001",  # 29 significant digits: normalize() used to round it to 1
        "-12.3400000000000000000000000000001",
        "0.00000000000000000000000000000000001",
        "1E+400",  # used to fail the rounding (a 500), never reaching a field error
    ],
)
async def test_money_beyond_the_currency_is_refused_never_rounded(
    client: httpx.AsyncClient, catalog: None, token_for, session: AsyncSession, amount: str
) -> None:
    """Every mutation that turns a major-unit amount into minor units refuses what the currency
    cannot hold, however many significant digits it takes to see it, and writes nothing."""
    finance = await token_for("finance")
    created = await graphql(
        client,
        await token_for("admin"),
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } } }",
        {"i": {"externalId": "org_digits", "name": "Digits", "currency": "EUR"}},
    )
    customer_id = created.json()["data"]["createCustomer"]["customer"]["id"]
    grant = (
        await graphql(
            client,
            finance,
            "mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { userErrors { field code } } }",
            grant_input(customer_id, amount.lstrip("-"), "g"),
        )
    ).json()["data"]
    adjust = (
        await graphql(
            client,
            finance,
            ADJUST,
            {"i": {"customerId": customer_id, "amount": amount, "reason": "fee", "idempotencyKey": "a"}},
        )
    ).json()["data"]
    promotion = (
        await graphql(
            client,
            await token_for("admin"),
            "mutation($i: CreatePromotionInput!) { createPromotion(input: $i) { userErrors { field code } } }",
            {"i": {"code": "DIGITS", "description": "x", "creditAmount": amount.lstrip("-"), "currency": "EUR"}},
        )
    ).json()["data"]
    assert [(e["code"], e["field"]) for e in grant["grantCredits"]["userErrors"]] == [("INVALID", ["amount"])]
    assert [(e["code"], e["field"]) for e in adjust["adjustBalance"]["userErrors"]] == [("INVALID", ["amount"])]
    assert [(e["code"], e["field"]) for e in promotion["createPromotion"]["userErrors"]] == [
        ("INVALID", ["creditAmount"])
    ]
    assert (await session.execute(text("SELECT count(*) FROM ledger_transactions"))).scalar_one() == 0
    assert (
        await session.execute(text("SELECT count(*) FROM webhook_events WHERE type = 'credits.granted'"))
    ).scalar_one() == 0
    assert (await session.execute(text("SELECT count(*) FROM promotions"))).scalar_one() == 0
