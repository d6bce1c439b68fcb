"""A tiered invoice in euros, to a customer with billing details: what the document tests share."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from app.usage_ingest import ingest_limits
from billing.documents.document import Seller
from billing.invoices import service as billing
from customers.service import NewCustomer, create_customer
from metering.service import ingest
from pricing.service import apply_catalog

CATALOG = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[plans]]
key = "scale"
name = "Scale"
currency = "EUR"
interval = "month"
base_fee = "1200.00"

  [[plans.charges]]
  meter = "calls"
  model = "graduated"
  included = 1000
  tiers = [{ up_to = 2000, unit_price = "0.10" }, { up_to = "inf", unit_price = "0.05" }]
"""
JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, tzinfo=UTC)
CALLS = 4500  # 1,000 included, 2,000 at 0.10, 1,500 at 0.05: 275.00
SELLER = Seller(
    legal_name="Tally Billing SAS",
    address_lines=("12 rue de la Paix", "75002 Paris"),
    country="FR",
    tax_id="FR40303265045",
    email="billing@tally.example",
)


async def tiered_invoice(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    more_catalog: str = "",
    before_billing: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> Any:
    """Le Petit Atelier's February invoice: the tiered usage of February and March's base fee.
    ``more_catalog`` adds to the catalog (tax rates); ``before_billing`` runs with the customer's
    id before the billing run (a coupon, a credit grant)."""
    await apply_catalog(session, CATALOG + more_catalog, as_of=JAN_31 - timedelta(days=30))
    customer = await create_customer(
        session,
        NewCustomer(external_id="atelier", name="atelier", currency="EUR", plan_key="scale", started_at=JAN_31),
        as_of=JAN_31,
    )
    await session.execute(
        text(
            "UPDATE customers SET legal_name = 'Le Petit Atelier SARL', address_line1 = '3 place Bellecour', "
            "postal_code = '69002', city = 'Lyon', country = 'FR', tax_id = 'FR12345678901', locale = 'fr', "
            "invoice_emails = ARRAY['compta@atelier.example'] WHERE id = :id"
        ),
        {"id": customer.id},
    )
    await session.commit()
    at = JAN_31 + timedelta(days=3)
    items = [
        {"id": f"call-{i}", "customer": "atelier", "type": "api.call", "timestamp": at.isoformat(), "properties": {}}
        for i in range(CALLS)
    ]
    result = await ingest(
        session, items, received_at=at + timedelta(minutes=1), limits=ingest_limits(settings), trace_id=None
    )
    assert result.accepted == CALLS
    await session.commit()
    if before_billing is not None:
        await before_billing(customer.id)
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=2))
    return await invoice_of(session, customer.id, "period")


async def invoice_of(session: AsyncSession, customer_id: uuid.UUID, kind: str) -> Any:
    found = await billing.invoices(session, customer_id, limit=10)
    [invoice] = [invoice for invoice in found if invoice.kind == kind]
    return invoice
