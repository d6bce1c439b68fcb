"""Dunning: what a failed payment of an unpaid invoice does. The invoice is tried again on a
schedule counted from its first failure (``TALLY_DUNNING_RETRY_DAYS``), the customer is PAST_DUE
meanwhile and SUSPENDED when the last retry fails too; each failure is emailed (with when the next
try is, or that there is none) and told to the product (``invoice.payment_failed``, once per
attempt). Called once per attempt's outcome by :func:`billing.collection.outcomes.record_outcome`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import emails
from billing.collection import repository as collection_repository
from billing.invoices import collection_state
from billing.invoices.events import emit_invoice_event
from billing.models import Invoice
from customers import service as customers


async def dun(
    session: AsyncSession,
    invoice: Invoice,
    attempt: int,
    *,
    error: str | None,
    as_of: datetime,
    retry_after: tuple[timedelta, ...],
) -> datetime | None:
    """Act on the failed ``attempt`` of the unpaid ``invoice``: schedule its next retry
    ``retry_after`` its first failure (the answer), or, past the last, fail it for good (None)."""
    failures = await collection_repository.failed_attempts(session, invoice.id)
    first_failed_at = await collection_repository.first_failure(session, invoice.id) or as_of
    retry_at = first_failed_at + retry_after[failures - 1] if failures <= len(retry_after) else None
    if retry_at is not None:
        await collection_repository.schedule_retry_after_failure(
            session, invoice.id, failed_at=first_failed_at, retry_at=retry_at, error=error
        )
        await customers.set_status(session, invoice.customer_id, "PAST_DUE")
    else:
        await collection_state.settle_outbox(session, invoice.id, "failed", error)
        await customers.set_status(session, invoice.customer_id, "SUSPENDED")
    await emails.payment_failed(session, invoice, attempt, next_retry_at=retry_at, as_of=as_of)
    key = f"invoice.payment_failed:{invoice.id}:{attempt}"
    await emit_invoice_event(session, "invoice.payment_failed", key, invoice, status=invoice.status, as_of=as_of)
    return retry_at
