"""Interim invoices as users see them: GraphQL says which invoices are interim (and the plan's
threshold), the upcoming invoice bills only the rest, the console marks them, and their document
is titled so."""

from __future__ import annotations

import uuid

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from billing.invoices.threshold_invoicing import issue_interim_invoice
from customers.service import subscriptions_of
from tests.billing.test_threshold_invoicing import over_threshold
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, sign_in

__all__ = ["over_threshold"]

INVOICES = """query($id: ID!) { customer(id: $id) {
  invoices(first: 10) { edges { node { number kind interim interimSequence total { amount currency } } } }
  upcomingInvoice { lines { kind description amount { amount } } } } }"""
PLANS = "{ plans { key invoiceThreshold { amount currency } } }"


async def test_interim_invoices_in_graphql_the_console_and_their_document(
    client: httpx.AsyncClient, session: AsyncSession, token_for, over_threshold: tuple[uuid.UUID, str]
) -> None:
    customer_id, _ = over_threshold
    [subscription] = (await subscriptions_of(session, [customer_id])).values()
    interim = await issue_interim_invoice(session, customer_id, subscription.id, as_of=now())
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    await session.commit()
    assert interim is not None
    admin = await token_for("admin")

    found = (await graphql(client, admin, INVOICES, {"id": str(customer_id)})).json()
    assert "errors" not in found, found
    customer = found["data"]["customer"]
    invoices = [edge["node"] for edge in customer["invoices"]["edges"]]
    assert [(i["kind"], i["interim"], i["interimSequence"], i["total"]["amount"]) for i in invoices] == [
        ("interim", True, 1, "14.50"),
        ("opening", False, None, "20.00"),
    ]
    # Everything used so far is billed: the upcoming period invoice has no usage left to bill.
    assert [line["kind"] for line in customer["upcomingInvoice"]["lines"]] == ["BASE_FEE"]
    plans = (await graphql(client, admin, PLANS)).json()["data"]["plans"]
    assert {"key": "metered", "invoiceThreshold": {"amount": "10.00", "currency": "USD"}} in plans

    await sign_in(client, "cs@example.com", PASSWORD)
    number = invoices[0]["number"]
    listed = await client.get(f"/console/customers/{customer_id}/invoices")
    assert f'{number}</a> <span class="badge interim-invoice">interim 1</span>' in listed.text
    page = await client.get(f"/console/invoices/{number}")
    assert page.status_code == 200
    assert '<span class="badge interim-invoice">interim 1</span> the period\'s usage so far' in page.text
    pdf = await client.get(f"/console/invoices/{number}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
