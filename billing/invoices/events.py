"""The webhook events of an issued invoice's life after issue: paid, a payment attempt failed,
voided, each emitted in the transaction of the change and keyed by what it tells of, so a change
retried (a Stripe webhook received twice, a void repeated) tells nothing more. ``invoice.issued``
is written by the invoice's own statement (:data:`billing.invoices.repository.WRITE_INVOICE`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import credit_notes_repository, repository
from billing.models import Invoice
from billing.webhook_payloads import invoice_data
from notifications.webhook_events import Event, emit


async def mark_paid(session: AsyncSession, invoice: Invoice, *, as_of: datetime) -> None:
    """Mark the issued ``invoice`` (locked by the caller) paid and tell ``invoice.paid``, once: an
    invoice already paid, voided or written off is left as it is and nothing is told."""
    if await repository.mark_paid(session, invoice.id):
        await emit_invoice_event(
            session, "invoice.paid", f"invoice.paid:{invoice.id}", invoice, status="paid", as_of=as_of
        )


async def emit_invoice_event(
    session: AsyncSession, event_type: str, key: str, invoice: Invoice, *, status: str, as_of: datetime
) -> uuid.UUID | None:
    """Tell ``event_type`` of ``invoice`` (locked by the caller), now of ``status``, with what its
    credit notes took back as it stands in this transaction."""
    credited, _, reduced = await credit_notes_repository.credited_of(session, invoice.id)
    row = {**invoice.model_dump(), "status": status}
    data = invoice_data(row, number=invoice.number, credited=credited, reduced=reduced)
    event = Event(key, event_type, "Invoice", str(invoice.id), data, invoice.customer_id)
    return await emit(session, event, as_of=as_of)
