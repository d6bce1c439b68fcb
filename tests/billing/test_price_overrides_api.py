"""Per-customer prices through GraphQL: setPriceOverride's dry run answers the period's amounts
before and after, the subscription's charges show the plan's price beside the customer's, the
upcoming invoice and its line use the override, removePriceOverride, who may do it, userErrors;
and the console's Prices page with its review step."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.staff import create_user
from customers.service import NewCustomer, create_customer
from metering.service import ingest
from tests.billing.scenario import LIMITS
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in

CHARGES = """query($id: ID!) { customer(id: $id) {
  subscription { currentPeriodStart charges { id position meter { key } model
    planPrice { unitPrice included limit } customerPrice { unitPrice included limit } override { id reason } } }
  upcomingInvoice { lines { kind description unitPrice amount { amount } } }
  priceOverrides { action overridden reason actor before { unitPrice } after { unitPrice } } } }"""
SET = """mutation($i: SetPriceOverrideInput!) { setPriceOverride(input: $i) {
  priceOverride { id action effectiveAt overridden before { unitPrice } after { unitPrice } }
  charge { id planPrice { unitPrice } customerPrice { unitPrice } override { id } }
  effect { chargeBefore { amount currency } chargeAfter { amount } invoiceBefore { amount } invoiceAfter { amount } }
  userErrors { field code message } } }"""
REMOVE = """mutation($i: RemovePriceOverrideInput!) { removePriceOverride(input: $i) {
  priceOverride { action } charge { customerPrice { unitPrice } override { id } } userErrors { field code } } }"""


@pytest.fixture
async def tokens_customer(session: AsyncSession, catalog: None, settings: Settings) -> str:
    """A Pro customer since 10 days ago who sent 1,000,000 large-1 tokens (3.00 at 0.000003)."""
    started = now() - timedelta(days=10)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_tokens", name="Tokens Inc", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.commit()
    event = {
        "id": "tokens-1",
        "customer": "org_tokens",
        "type": "llm.tokens",
        "timestamp": (now() - timedelta(days=2)).isoformat(),
        "properties": {"model": "large-1", "tokens": 1_000_000},
    }
    assert (await ingest(session, [event], received_at=now(), limits=LIMITS, trace_id=None)).accepted == 1
    await session.commit()
    return str(customer.id)


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


async def test_set_and_remove_a_price_override_through_graphql(
    client: httpx.AsyncClient, tokens_customer: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    before = (await ask(client, finance, CHARGES, {"id": tokens_customer}))["customer"]
    period_start = before["subscription"]["currentPeriodStart"]
    charge = next(
        c for c in before["subscription"]["charges"] if c["meter"]["key"] == "tokens" and c["model"] == "PER_UNIT"
    )
    assert charge["planPrice"] == charge["customerPrice"] == {"unitPrice": "0.000003", "included": "0", "limit": None}
    assert charge["override"] is None
    order = {
        "customerId": tokens_customer,
        "charge": {"meterKey": "tokens", "position": charge["position"]},
        "unitPrice": "0.000001",
        "effectiveAt": period_start,
        "reason": "annual contract",
        "idempotencyKey": f"k-{uuid.uuid4()}",
    }
    preview = (await ask(client, finance, SET, {"i": {**order, "dryRun": True}}))["setPriceOverride"]
    # 1,000,000 tokens: 3.00 at the plan's 0.000003, 1.00 at 0.000001; the upcoming invoice drops by 2.00.
    assert preview["effect"]["chargeBefore"] == {"amount": "3.00", "currency": "USD"}
    assert preview["effect"]["chargeAfter"] == {"amount": "1.00"}
    invoice_before, invoice_after = (Decimal(preview["effect"][k]["amount"]) for k in ("invoiceBefore", "invoiceAfter"))
    assert invoice_before - invoice_after == Decimal("2.00")
    assert preview["charge"]["customerPrice"] == {"unitPrice": "0.000001"} and preview["userErrors"] == []
    assert (await session.execute(text("SELECT count(*) FROM price_overrides"))).scalar_one() == 0

    done = (await ask(client, finance, SET, {"i": order}))["setPriceOverride"]
    assert done["userErrors"] == [] and done["priceOverride"]["overridden"] == ["unitPrice"]
    assert (done["priceOverride"]["before"], done["priceOverride"]["after"]) == (
        {"unitPrice": "0.000003"},
        {"unitPrice": "0.000001"},
    )
    again = (await ask(client, finance, SET, {"i": order}))["setPriceOverride"]
    assert again["priceOverride"]["id"] == done["priceOverride"]["id"], "a retry returns the first result"
    reused = (await ask(client, finance, SET, {"i": {**order, "unitPrice": "0.000002"}}))["setPriceOverride"]
    assert [(e["field"], e["code"]) for e in reused["userErrors"]] == [(["idempotencyKey"], "IDEMPOTENCY_KEY_REUSED")]

    after = (await ask(client, finance, CHARGES, {"id": tokens_customer}))["customer"]
    charge = next(c for c in after["subscription"]["charges"] if c["id"] == charge["id"])
    assert (charge["planPrice"]["unitPrice"], charge["customerPrice"]["unitPrice"]) == ("0.000003", "0.000001")
    assert charge["override"] == {"id": done["priceOverride"]["id"], "reason": "annual contract"}
    [line] = [line for line in after["upcomingInvoice"]["lines"] if line["description"].startswith("Model tokens")]
    assert (line["unitPrice"], line["amount"]["amount"]) == ("0.000001", "1.00")

    customer = await token_for("customer", "org_tokens")
    own = (await ask(client, customer, CHARGES, {"id": tokens_customer}))["customer"]
    assert own["priceOverrides"][0]["reason"] is None and own["priceOverrides"][0]["actor"] is None, "staff only"
    forbidden = (await graphql(client, customer, SET, {"i": {**order, "idempotencyKey": "mine"}})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    support = await token_for("support")
    forbidden = (await graphql(client, support, SET, {"i": {**order, "idempotencyKey": "support"}})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN", "finance and admin only"

    removal = {
        "customerId": tokens_customer,
        "charge": {"id": charge["id"]},
        "reason": "contract ended",
        "idempotencyKey": f"r-{uuid.uuid4()}",
    }
    removed = (await ask(client, finance, REMOVE, {"i": removal}))["removePriceOverride"]
    assert removed == {
        "priceOverride": {"action": "REMOVE"},
        "charge": {"customerPrice": {"unitPrice": "0.000003"}, "override": None},
        "userErrors": [],
    }
    history = (await ask(client, finance, CHARGES, {"id": tokens_customer}))["customer"]["priceOverrides"]
    assert [(row["action"], row["reason"]) for row in history] == [
        ("REMOVE", "contract ended"),
        ("SET", "annual contract"),
    ]


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"charge": {"meterKey": "seats"}}, ["charge"], "CHARGE_NOT_IN_PLAN"),
        ({"charge": {"id": str(uuid.uuid4())}}, ["charge"], "CHARGE_NOT_IN_PLAN"),
        ({"unitPrice": "-0.000001"}, ["unitPrice"], "INVALID"),
        ({"unitPrice": "0.0000000000001"}, ["unitPrice"], "INVALID"),
        ({"limit": "-1"}, ["limit"], "INVALID"),
        ({"effectiveAt": "2001-01-01T00:00:00Z"}, ["effectiveAt"], "INVALID"),
    ],
)
async def test_refusals_are_user_errors_and_change_nothing(
    client: httpx.AsyncClient,
    tokens_customer: str,
    token_for,
    session: AsyncSession,
    change: dict[str, Any],
    field: list[str],
    code: str,
) -> None:
    finance = await token_for("finance")
    order = {
        "customerId": tokens_customer,
        "charge": {"meterKey": "tokens", "position": 1},
        "unitPrice": "0.000001",
        "reason": "why not",
        "idempotencyKey": "bad",
        **change,
    }
    refused = (await ask(client, finance, SET, {"i": order}))["setPriceOverride"]
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(field, code)]
    assert refused["priceOverride"] is None and refused["effect"] is None
    assert (await session.execute(text("SELECT count(*) FROM price_overrides"))).scalar_one() == 0


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html.split('action="/console/customers/')[-1])
    assert found, name
    return found.group(1)


async def test_console_prices_page_review_and_confirm(
    client: httpx.AsyncClient, tokens_customer: str, session: AsyncSession
) -> None:
    for email, role in (("fin@example.com", "finance"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "ro@example.com", PASSWORD)
    overview = await client.get(f"/console/customers/{tokens_customer}")
    assert f'href="/console/customers/{tokens_customer}/prices"' in overview.text, "linked from the customer page"
    read_only = await client.get(f"/console/customers/{tokens_customer}/prices")
    assert read_only.status_code == 200 and "0.000003 per token" in read_only.text
    assert "prices/review" not in read_only.text, "a viewer sees no form"

    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{tokens_customer}/prices")
    charge_id = re.search(r'<option value="([^"]+)"[^>]*>Model tokens \(model = large-1\)', page.text)
    assert charge_id, page.text
    # After the subscription began (10 days ago, to the microsecond) and before the tokens (2 days ago).
    effective_at = (datetime.now(UTC) - timedelta(days=9)).replace(microsecond=0)
    form = {
        "csrftoken": csrf_of(page.text),
        "idempotency_key": _hidden(page.text.split('id="price-override-form"')[1], "idempotency_key"),
        "charge_id": charge_id.group(1),
        "action": "set",
        "unit_price": "0.000001",
        "effective_at": effective_at.isoformat(),
        "reason": "annual contract",
    }
    refused = await client.post(
        f"/console/customers/{tokens_customer}/prices/review", data={**form, "unit_price": "-1"}
    )
    assert refused.status_code == 422 and '<span class="field-error">must not be negative</span>' in refused.text
    review = await client.post(f"/console/customers/{tokens_customer}/prices/review", data=form)
    assert review.status_code == 200 and "Confirm" in review.text
    cells = re.findall(r"<td>([\d.]+) USD</td>", review.text.split('id="override-effect"')[1])
    assert cells[:2] == ["3.00", "1.00"], "the charge before and after, from the dry run"
    assert (await session.execute(text("SELECT count(*) FROM price_overrides"))).scalar_one() == 0
    confirm = {
        name: _hidden(review.text, name)
        for name in ("idempotency_key", "charge_id", "unit_price", "effective_at", "reason", "action")
    }
    confirm["csrftoken"] = form["csrftoken"]
    for _ in range(2):  # a double submit changes the price once
        done = await client.post(f"/console/customers/{tokens_customer}/prices", data=confirm)
        assert done.status_code == 303 and "/prices?notice=" in done.headers["location"]
    assert (await session.execute(text("SELECT count(*) FROM price_overrides"))).scalar_one() == 1
    shown = await client.get(done.headers["location"])
    assert "<strong>0.000001 per token" in shown.text and "annual contract" in shown.text
