"""The billing run: every customer's due invoices, one committed database transaction per
invoice, a few customers at a time. Used by `tally billing run`, the job in `tally serve`, the
demo and the benchmark.

Safe to run twice, concurrently, or again after a crash: a customer's subscription row is
locked with SKIP LOCKED while their invoice is issued, and the invoice's unique (customer,
kind, period) key and the ledger's idempotency keys refuse a second copy. A deadlock or
serialization failure reruns that one invoice's transaction.

One customer's failure never stops the others: whatever issuing their invoice raises, that
transaction is rolled back, the failure is recorded (``billing.invoices.failures``: the error, a
``BILLING_FAILED`` anomaly, the ``tally.billing.failures`` counter) and the run goes on. A
failing customer is tried again by later runs with backoff (``TALLY_BILLING_RETRY_MINUTES``,
doubling up to ``TALLY_BILLING_RETRY_MAX_HOURS``), or at once with ``retry_failed``.
"""

from __future__ import annotations

import asyncio
import logging
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
from app.metrics import BILLING_FAILURES, BILLING_RUN_DURATION, INVOICES_ISSUED
from app.settings import Settings
from app.telemetry import current_trace_id
from billing.invoices.failures import Backoff, clear_failure, failure_summary, record_failure, retry_times
from billing.invoices.service import BillingWindow, IssuedInvoice, due_customers, issue_next_invoice
from billing.models import Invoice

tracer = trace.get_tracer("tally.billing")
logger = logging.getLogger("tally.billing")


def billing_window(settings: Settings) -> BillingWindow:
    return BillingWindow(
        grace=timedelta(minutes=settings.billing_grace_minutes),
        late_window=timedelta(days=settings.event_max_age_days),
        trial_without_payment_method=settings.trial_without_payment_method,
        payment_terms=timedelta(days=settings.payment_terms_days),
    )


def billing_backoff(settings: Settings) -> Backoff:
    return Backoff(
        first=timedelta(minutes=settings.billing_retry_minutes),
        longest=timedelta(hours=settings.billing_retry_max_hours),
    )


@dataclass
class BillingRunReport:
    as_of: datetime
    customers_considered: int = 0
    invoices_issued: int = 0
    totals_minor: Counter[str] = field(default_factory=Counter)  # invoice totals by currency
    seconds: float = 0.0
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # customer → why, this run
    waiting: dict[uuid.UUID, datetime] = field(default_factory=dict)  # failed before, not retried yet: → when

    @property
    def complete(self) -> bool:
        """Every due customer is billed: none failed, none waits for a retry."""
        return not self.failed and not self.waiting


async def _issue_one(
    sessions: async_sessionmaker[AsyncSession], customer_id: uuid.UUID, as_of: datetime, window: BillingWindow
) -> IssuedInvoice | None:
    async with sessions() as session:
        return await in_transaction(
            session,
            lambda: issue_next_invoice(session, customer_id, as_of=as_of, window=window, trace_id=current_trace_id()),
        )


async def _record_failure(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    customer_id: uuid.UUID,
    error: Exception,
    as_of: datetime,
) -> str:
    """Record a customer's failure in a transaction of its own (theirs was rolled back); why it failed."""
    summary = failure_summary(error)
    trace_id = current_trace_id()
    logger.error("billing customer %s failed (trace %s): %s", customer_id, trace_id, summary, exc_info=error)
    BILLING_FAILURES.add(1)
    try:
        async with sessions() as session:
            await in_transaction(
                session,
                lambda: record_failure(
                    session, customer_id, summary, as_of=as_of, backoff=billing_backoff(settings), trace_id=trace_id
                ),
            )
    except Exception:  # the database itself is failing: the log and the run's report still say it
        logger.exception("could not record the billing failure of customer %s", customer_id)
    return summary


async def _clear_failure(sessions: async_sessionmaker[AsyncSession], customer_id: uuid.UUID, as_of: datetime) -> None:
    async with sessions() as session:
        await in_transaction(session, lambda: clear_failure(session, customer_id, as_of=as_of))


async def run_billing(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    as_of: datetime,
    retry_failed: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_customer_done: Callable[[list[Invoice]], None] | None = None,
) -> BillingRunReport:
    """Issue every invoice due by ``as_of``. ``on_start`` gets the number of customers to look at,
    ``on_customer_done`` the invoices issued for each (for a progress bar). A customer whose
    invoice failed before is skipped until their retry is due, unless ``retry_failed``."""
    window = billing_window(settings)
    report = BillingRunReport(as_of=as_of)
    started = time.perf_counter()
    with tracer.start_as_current_span("billing.run", attributes={"tally.as_of": as_of.isoformat()}) as span:
        async with sessions() as session:
            customer_ids = await due_customers(session, as_of=as_of, window=window)
            failing = await retry_times(session)
        if not retry_failed:
            report.waiting = {c: failing[c] for c in customer_ids if c in failing and failing[c] > as_of}
            customer_ids = [c for c in customer_ids if c not in report.waiting]
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
                try:
                    while (found := await _issue_one(sessions, customer_id, as_of, window)) is not None:
                        issued.append(found.invoice)
                        report.invoices_issued += 1
                        report.totals_minor[found.invoice.currency] += found.invoice.total
                        INVOICES_ISSUED.add(1, {"currency": found.invoice.currency, "kind": found.invoice.kind})
                        if not found.more_due:
                            break
                except Exception as error:  # anything at all: the other customers are billed regardless
                    span.record_exception(error, attributes={"tally.customer_id": str(customer_id)})
                    report.failed[customer_id] = await _record_failure(sessions, settings, customer_id, error, as_of)
                else:
                    if issued and customer_id in failing:
                        await _clear_failure(sessions, customer_id, as_of)
                if on_customer_done:
                    on_customer_done(issued)

        await asyncio.gather(*(worker() for _ in range(settings.billing_concurrency)))
        report.seconds = time.perf_counter() - started
        BILLING_RUN_DURATION.record(report.seconds)
        span.set_attribute("tally.invoices_issued", report.invoices_issued)
        span.set_attribute("tally.customers", report.customers_considered)
        span.set_attribute("tally.customers_failed", len(report.failed))
    return report
