"""The billing run: every customer's due invoices, one committed database transaction per
invoice, a few customers at a time. Used by `tally billing run`, the job in `tally serve`, the
demo and the benchmark.

Safe to run twice, concurrently, or again after a crash: a customer's subscription row is
locked with SKIP LOCKED while their invoice is issued, and the invoice's unique (customer,
kind, period) key and the ledger's idempotency keys refuse a second copy. A deadlock or
serialization failure reruns that one invoice's transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentelemetry import trace
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from app.metrics import BILLING_RUN_DURATION, INVOICES_ISSUED
from app.settings import Settings
from app.telemetry import current_trace_id
from billing.models import Invoice
from billing.service import BillingWindow, IssuedInvoice, due_customers, issue_next_invoice

tracer = trace.get_tracer("tally.billing")


def billing_window(settings: Settings) -> BillingWindow:
    return BillingWindow(
        grace=timedelta(minutes=settings.billing_grace_minutes),
        late_window=timedelta(days=settings.event_max_age_days),
    )


@dataclass
class BillingRunReport:
    as_of: datetime
    customers_considered: int = 0
    invoices_issued: int = 0
    totals_minor: Counter[str] = field(default_factory=Counter)  # invoice totals by currency
    seconds: float = 0.0

    @property
    def invoices_per_second(self) -> float:
        return self.invoices_issued / self.seconds if self.seconds else 0.0


async def _issue_one(
    sessions: async_sessionmaker[AsyncSession], customer_id: uuid.UUID, as_of: datetime, window: BillingWindow
) -> IssuedInvoice | None:
    async with sessions() as session:
        return await in_transaction(
            session,
            lambda: issue_next_invoice(session, customer_id, as_of=as_of, window=window, trace_id=current_trace_id()),
        )


async def run_billing(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    as_of: datetime,
    on_start: Callable[[int], None] | None = None,
    on_customer_done: Callable[[list[Invoice]], None] | None = None,
) -> BillingRunReport:
    """Issue every invoice due by ``as_of``. ``on_start`` gets the number of customers to look at,
    ``on_customer_done`` the invoices issued for each (for a progress bar)."""
    window = billing_window(settings)
    report = BillingRunReport(as_of=as_of)
    started = time.perf_counter()
    with tracer.start_as_current_span("billing.run", attributes={"tally.as_of": as_of.isoformat()}) as span:
        async with sessions() as session:
            customer_ids = await due_customers(session, as_of=as_of, window=window)
        report.customers_considered = len(customer_ids)
        if on_start:
            on_start(len(customer_ids))
        queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        for customer_id in customer_ids:
            queue.put_nowait(customer_id)

        async def worker() -> None:
            while not queue.empty():
                customer_id = queue.get_nowait()
                issued = []
                while (found := await _issue_one(sessions, customer_id, as_of, window)) is not None:
                    issued.append(found.invoice)
                    report.invoices_issued += 1
                    report.totals_minor[found.invoice.currency] += found.invoice.total
                    INVOICES_ISSUED.add(1, {"currency": found.invoice.currency, "kind": found.invoice.kind})
                    if not found.more_due:
                        break
                if on_customer_done:
                    on_customer_done(issued)

        await asyncio.gather(*(worker() for _ in range(settings.billing_concurrency)))
        report.seconds = time.perf_counter() - started
        BILLING_RUN_DURATION.record(report.seconds)
        span.set_attribute("tally.invoices_issued", report.invoices_issued)
        span.set_attribute("tally.customers", report.customers_considered)
    return report
