"""What the billing tests share (fixtures re-exported by conftest): a small catalog whose amounts are easy to work out by hand,
customers subscribed at chosen moments, usage sent through real ingestion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from app.usage_ingest import ingest_limits
from billing.invoices import service as billing
from customers.service import NewCustomer, create_customer
from ledger.grants import grant_credits
from metering.service import ingest
from pricing.service import apply_catalog

CATALOG = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"
group_by = ["region"]

[[plans]]
key = "basic"
name = "Basic"
currency = "USD"
interval = "month"
base_fee = "10.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"
  included = 100

[[plans]]
key = "plus"
name = "Plus"
currency = "USD"
interval = "month"
base_fee = "40.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.05"
"""
JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, tzinfo=UTC)
LIMITS = ingest_limits(Settings())


@pytest.fixture
async def billing_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=30))
    await session.commit()


async def subscribe(session: AsyncSession, external_id: str, plan: str, started_at: datetime) -> uuid.UUID:
    customer = await create_customer(
        session,
        NewCustomer(external_id=external_id, name=external_id, currency="USD", plan_key=plan, started_at=started_at),
        as_of=started_at,
    )
    await session.commit()
    return customer.id


async def send_calls(
    session: AsyncSession, external_id: str, count: int, at: datetime, *, received: datetime | None = None
) -> None:
    items = [
        {
            "id": f"{external_id}-{at.isoformat()}-{i}",
            "customer": external_id,
            "type": "api.call",
            "timestamp": at.isoformat(),
            "properties": {"region": "eu"},
        }
        for i in range(count)
    ]
    result = await ingest(
        session, items, received_at=received or at + timedelta(minutes=1), limits=LIMITS, trace_id=None
    )
    assert result.accepted == count
    await session.commit()


async def invoices_of(session: AsyncSession, customer_id: uuid.UUID) -> list[Any]:
    found = await billing.invoices(session, customer_id, limit=100)
    return sorted(found, key=lambda invoice: invoice.number)


async def lines_of(session: AsyncSession, invoice_id: uuid.UUID) -> list[tuple[str, str, Any, int]]:
    lines = (await billing.lines_of(session, [invoice_id]))[invoice_id]
    return [(line.kind, line.description, line.quantity, line.amount) for line in lines]


async def opening_invoice(session: AsyncSession, sessions: Any, settings: Settings, credits: int = 0) -> Any:
    """A Basic customer's opening invoice: 10.00, less the credits they hold."""
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    if credits:
        await grant_credits(
            session,
            customer_id=customer_id,
            currency="USD",
            amount=credits,
            reason="welcome",
            actor="test",
            idempotency_key="welcome",
            as_of=JAN_31 - timedelta(days=1),
        )
        await session.commit()
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    [invoice] = await invoices_of(session, customer_id)
    return invoice
