"""What the lifecycle tests share: a catalog whose amounts are easy to work out by hand, and the
requests made as the API makes them (one committed transaction each, dry runs rolled back)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.usage_ingest import ingest_limits
from billing.invoices import service as billing
from billing.invoices.service import BillingWindow
from billing.subscriptions.lifecycle import LifecycleOutcome, change_lifecycle
from customers.lifecycle import LifecycleRequest
from customers.service import NewCustomer, create_customer
from metering.service import IngestResult, ingest

CATALOG = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[plans]]
key = "hundred"
name = "Hundred"
currency = "USD"
interval = "month"
base_fee = "100.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"

[[plans]]
key = "sixty"
name = "Sixty"
currency = "USD"
interval = "month"
base_fee = "60.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.25"

[[plans]]
key = "strict"
name = "Strict"
currency = "USD"
interval = "month"
base_fee = "30.00"
paused_usage = "refuse"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "1.00"
  limit = 1000
"""
#: Plans of the catalog: base fee and the price of a call, for the tests' own model.
FEES = {"hundred": ("100.00", "0.10"), "sixty": ("60.00", "0.25"), "strict": ("30.00", "1.00")}
WINDOW = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))
LIMITS = ingest_limits(Settings())


async def subscribe(
    session: AsyncSession, external_id: str, plan: str, started_at: datetime, *, trial_days: int | None = None
) -> uuid.UUID:
    new = NewCustomer(
        external_id=external_id,
        name=external_id,
        currency="USD",
        plan_key=plan,
        started_at=started_at,
        trial_days=trial_days,
    )
    customer = await create_customer(session, new, as_of=started_at)
    await session.commit()
    return customer.id


async def bill(session: AsyncSession, customer_id: uuid.UUID, as_of: datetime) -> None:
    """Every invoice of the customer due by ``as_of``, one committed transaction each (as a run)."""
    while await billing.issue_next_invoice(session, customer_id, as_of=as_of, window=WINDOW) is not None:
        await session.commit()
    await session.commit()


async def send_calls(
    session: AsyncSession, external_id: str, count: int, at: datetime, *, received: datetime | None = None
) -> IngestResult:
    items = [
        {
            "id": f"{external_id}-{at.isoformat()}-{i}",
            "customer": external_id,
            "type": "api.call",
            "timestamp": at.isoformat(),
        }
        for i in range(count)
    ]
    result = await ingest(
        session, items, received_at=received or at + timedelta(minutes=1), limits=LIMITS, trace_id=None
    )
    await session.commit()
    return result


async def lifecycle(
    session: AsyncSession,
    customer_id: uuid.UUID,
    kind: str,
    *,
    as_of: datetime,
    at: datetime | None = None,
    timing: str | None = None,
    reason: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    backdate_limit: timedelta | None = None,
) -> LifecycleOutcome:
    """A lifecycle request at ``as_of``, committed (a dry run and a refusal are rolled back)."""
    request = LifecycleRequest(
        customer_id=customer_id,
        kind=kind,
        idempotency_key=key or f"{customer_id}-{kind}-{as_of.isoformat()}-{uuid.uuid4().hex[:6]}",
        actor="test",
        timing=timing,
        at=at,
        reason=reason,
    )
    try:
        outcome = await change_lifecycle(
            session,
            request,
            as_of=as_of,
            late_window=WINDOW.late_window,
            backdate_limit=backdate_limit,
            dry_run=dry_run,
        )
    except Exception:
        await session.rollback()
        raise
    if dry_run:
        await session.rollback()
    else:
        await session.commit()
    return outcome


async def all_lines(session: AsyncSession, customer_id: uuid.UUID) -> list[Any]:
    """Every line of every invoice of the customer, in the order they were issued."""
    invoices = sorted(await billing.invoices(session, customer_id, limit=1000), key=lambda invoice: invoice.number)
    found = await billing.lines_of(session, [invoice.id for invoice in invoices])
    return [line for invoice in invoices for line in found[invoice.id]]
