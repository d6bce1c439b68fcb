"""Invoices, the upcoming invoice, plan changes and simulation through GraphQL: the contract's
operations with real data, who may see what, and refusals as userErrors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from tests.app.test_graphql_contract import contract_operations
from tests.app.test_graphql_contract import run_contract_operation as run
from tests.conftest import DEMO_CATALOG, graphql

OPS = dict(contract_operations())
SIMULATE = """mutation($i: SimulatePricingInput!) { simulatePricing(input: $i) {
  simulation { customers { externalId current { amount } simulated { amount } difference { amount } changePercent }
               totals { difference { amount currency } } distribution { label customers } }
  userErrors { field code message } } }"""


@pytest.fixture
async def billed_customer(
    client: httpx.AsyncClient, catalog: None, token_for, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> str:
    """A Pro customer who started 40 days ago: an opening and a closing invoice are issued."""
    settings.backdate_max_days = 45
    admin = await token_for("admin")
    started = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    created = await run(
        client,
        admin,
        "CreateCustomer",
        {
            "input": {
                "externalId": "org_billed",
                "name": "Billed",
                "currency": "USD",
                "planKey": "pro",
                "startedAt": started,
            }
        },
    )
    await run_billing(sessions, settings, as_of=datetime.now(UTC))
    return created["createCustomer"]["customer"]["id"]


async def test_customer_invoices_and_the_upcoming_invoice(
    client: httpx.AsyncClient, billed_customer: str, token_for
) -> None:
    customer = await token_for("customer", "org_billed")
    found = (await run(client, customer, "CustomerInvoices", {"externalId": "org_billed", "first": 10}))["customer"]
    invoices = [edge["node"] for edge in found["invoices"]["edges"]]
    assert len(invoices) == 2 and found["invoices"]["pageInfo"]["hasNextPage"] is False
    closing, opening = invoices  # newest first
    assert int(opening["number"].removeprefix("INV-")) + 1 == int(closing["number"].removeprefix("INV-"))
    assert opening["total"] == {"amount": "20.00", "currency": "USD"} and opening["status"] == "ISSUED"
    assert opening["lines"][0]["description"].startswith("Pro v1 base fee")
    assert opening["lines"][0]["unitPrice"] == "20" and opening["lines"][0]["quantity"] == "1"
    # The closing invoice bills the next period's base fee; no usage was sent.
    assert closing["amountDue"] == {"amount": "20.00", "currency": "USD"}
    assert closing["periodEnd"] == opening["periodEnd"]
    upcoming = found["upcomingInvoice"]
    assert upcoming["periodStart"] == closing["periodEnd"]
    assert upcoming["total"] == {"amount": "20.00", "currency": "USD"}
    assert upcoming["creditsApplied"] == {"amount": "0.00", "currency": "USD"}
    overview = (await run(client, customer, "CustomerOverview", {"externalId": "org_billed"}))["customer"]
    assert overview["balance"]["outstanding"] == {"amount": "40.00", "currency": "USD"}
    assert overview["balance"]["unbilled"] == {"amount": "0.00", "currency": "USD"}


async def test_a_customer_token_reads_only_its_own_invoices(
    client: httpx.AsyncClient, billed_customer: str, token_for
) -> None:
    admin = await token_for("admin")
    await run(
        client, admin, "CreateCustomer", {"input": {"externalId": "org_other", "name": "Other", "currency": "USD"}}
    )
    other = await token_for("customer", "org_other")
    body = (await graphql(client, other, '{ invoice(number: "INV-000001") { id total { amount } } }')).json()
    assert body["data"]["invoice"] is None
    owner = await token_for("customer", "org_billed")
    body = (
        await graphql(client, owner, '{ invoice(number: "INV-000001") { total { amount } ledgerEntries { kind } } }')
    ).json()
    assert body["data"]["invoice"]["total"]["amount"] == "20.00"
    assert [entry["kind"] for entry in body["data"]["invoice"]["ledgerEntries"]] == ["invoice"]


async def test_change_plan_dry_run_then_for_real(
    client: httpx.AsyncClient, billed_customer: str, token_for, session: AsyncSession
) -> None:
    support = await token_for("support")
    variables = {
        "input": {
            "customerId": billed_customer,
            "planKey": "team",
            "effective": "IMMEDIATELY",
            "idempotencyKey": "up-1",
        }
    }
    preview = (await run(client, support, "ChangePlan", {"input": {**variables["input"], "dryRun": True}}))[
        "changePlan"
    ]
    assert preview["userErrors"] == []
    credit, charge = preview["prorations"]
    assert Decimal(credit["amount"]["amount"]) < 0 < Decimal(charge["amount"]["amount"])
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 0
    changed = (await run(client, support, "ChangePlan", variables))["changePlan"]
    assert changed["userErrors"] == [] and changed["subscription"]["plan"]["key"] == "team"
    assert changed["prorations"] == preview["prorations"]
    same = (await run(client, support, "ChangePlan", {"input": {**variables["input"], "idempotencyKey": "up-2"}}))[
        "changePlan"
    ]
    assert same["userErrors"] == [
        {"field": ["planKey"], "code": "SAME_VERSION", "message": same["userErrors"][0]["message"]}
    ]
    viewer = await token_for("viewer")
    refused = (await graphql(client, viewer, OPS["ChangePlan"], variables)).json()
    assert refused["data"] is None or refused["data"]["changePlan"] is None


async def test_simulate_pricing_through_graphql(client: httpx.AsyncClient, billed_customer: str, token_for) -> None:
    finance = await token_for("finance")
    draft = DEMO_CATALOG.read_text().replace('base_fee = "20.00"', 'base_fee = "30.00"')
    since = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    body = (await graphql(client, finance, SIMULATE, {"i": {"catalog": draft, "from": since}})).json()
    payload = body["data"]["simulatePricing"]
    assert payload["userErrors"] == []
    [simulated] = payload["simulation"]["customers"]
    assert simulated["externalId"] == "org_billed"
    assert (simulated["current"]["amount"], simulated["simulated"]["amount"]) == ("20.00", "30.00")
    assert simulated["changePercent"] == "50.0"
    broken = draft.replace('interval = "month"', 'interval = "fortnight"', 1)
    refused = (await graphql(client, finance, SIMULATE, {"i": {"catalog": broken, "from": since}})).json()
    assert refused["data"]["simulatePricing"]["simulation"] is None
    assert [e["field"] for e in refused["data"]["simulatePricing"]["userErrors"]] == [["catalog", "plans[0].interval"]]


async def test_a_simulation_leaves_the_cached_plan_versions_usable(
    client: httpx.AsyncClient, catalog: None, token_for
) -> None:
    """A simulation is the first to read the Team plan's version, then rolls back: the versions it
    cached for the whole process must still serve the next request."""
    admin = await token_for("admin")
    team = {"externalId": "org_team", "name": "Team Co", "currency": "USD", "planKey": "team"}
    await run(client, admin, "CreateCustomer", {"input": team})
    draft = DEMO_CATALOG.read_text().replace('base_fee = "40.00"', 'base_fee = "45.00"')
    body = (await graphql(client, admin, SIMULATE, {"i": {"catalog": draft, "periods": 1}})).json()
    assert body["data"]["simulatePricing"]["userErrors"] == []
    usage = await run(client, admin, "CustomerUsage", {"externalId": "org_team"})
    assert {meter["meter"]["key"] for meter in usage["customer"]["usage"]} == {"seats", "requests"}
