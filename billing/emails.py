"""The emails billing's events queue, in the event's own transaction (``notifications``'
outbox): an invoice issued, a payment failed (dunning), a payment received, a credit note. Each is keyed by
what it tells of, so re-running the billing run or receiving a webhook twice queues nothing
more. What a message says is fixed here, from the invoice as issued."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoice_numbers import invoice_number
from billing.models import CreditNote, Invoice
from customers.billing_details import billing_details_of
from customers.models import Customer
from ledger.errors import NotFound
from notifications import repository
from notifications import service as outbox
from notifications.models import EmailMessage
from notifications.service import NO_SUCH_MESSAGE, Addressee, Email


async def addressee_of(session: AsyncSession, customer_id: uuid.UUID) -> Addressee:
    """Whom the customer's messages go to now: their invoice emails, in their locale."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("no such customer", field="customerId")
    details = billing_details_of(customer)
    return Addressee(tuple(details.invoice_emails), details.locale, details.addressee)


async def enqueue(session: AsyncSession, email: Email, *, as_of: datetime) -> uuid.UUID | None:
    """Queue ``email`` to its customer as addressed now, in the caller's transaction."""
    return await outbox.enqueue(session, email, await addressee_of(session, email.customer_id), as_of=as_of)


async def resend(session: AsyncSession, message_id: uuid.UUID, *, as_of: datetime) -> EmailMessage:
    """Send a message again to its customer's invoice emails and locale as they are now (see
    ``notifications.service.resend``)."""
    found = await repository.by_ids(session, [message_id])
    if not found:
        raise NotFound(NO_SUCH_MESSAGE, field="id")
    return await outbox.resend(session, message_id, await addressee_of(session, found[0].customer_id), as_of=as_of)


def _refs(invoice: Invoice) -> dict[str, object]:
    return {"invoice_id": str(invoice.id)}


async def invoice_issued(session: AsyncSession, row: dict[str, Any], *, as_of: datetime) -> dict[str, Any]:
    """The outbox row telling the customer of the invoice ``row`` (as written), for the invoice's
    own statement to write: it adds the invoice's number, taken there (see
    ``billing.invoices.repository.WRITE_INVOICE``). Its document is attached by the sender's seam; it falls
    due on the invoice's due date."""
    issued_at: datetime = row["issued_at"]
    content = {
        "kind": row["kind"],
        "currency": row["currency"],
        "total": row["total"],
        "amount_due": row["amount_due"],
        "issued_at": issued_at.isoformat(),
        "due_at": (row.get("due_at") or issued_at).isoformat(),
        "period_start": row["period_start"].isoformat(),
        "period_end": row["period_end"].isoformat(),
    }
    refs = {"invoice_id": str(row["id"])}
    email = Email(f"invoice-issued:{row['id']}", "invoice_issued", row["customer_id"], refs, content)
    return outbox.prepare(email, await addressee_of(session, email.customer_id), as_of=as_of)


async def payment_failed(
    session: AsyncSession, invoice: Invoice, attempt: int, *, next_retry_at: datetime | None, as_of: datetime
) -> None:
    """Tell the customer a payment attempt failed, and when it is tried again (None: it is not:
    the customer is suspended). One message per attempt."""
    content = {
        "invoice_number": invoice.number,
        "currency": invoice.currency,
        "amount_due": invoice.amount_due,
        "failed_at": as_of.isoformat(),
        "next_retry_at": next_retry_at.isoformat() if next_retry_at else None,
    }
    refs = {**_refs(invoice), "attempt": attempt}
    email = Email(f"payment-failed:{invoice.id}:{attempt}", "payment_failed", invoice.customer_id, refs, content)
    await enqueue(session, email, as_of=as_of)


async def payment_receipt(session: AsyncSession, invoice: Invoice, amount: int, *, paid_at: datetime) -> None:
    """A receipt for the invoice's payment (an invoice is paid once)."""
    content = {
        "invoice_number": invoice.number,
        "currency": invoice.currency,
        "amount_paid": amount,
        "paid_at": paid_at.isoformat(),
    }
    email = Email(f"payment-receipt:{invoice.id}", "payment_receipt", invoice.customer_id, _refs(invoice), content)
    await enqueue(session, email, as_of=paid_at)


async def credit_note_issued(session: AsyncSession, note: CreditNote, invoice: Invoice, *, number: str) -> None:
    """Tell the customer of a credit note, in the note's own transaction: one message a note."""
    content = {
        "credit_note_number": number,
        "invoice_number": invoice_number(invoice.number),
        "currency": note.currency,
        "amount": note.amount,
        "issued_at": note.issued_at.isoformat(),
    }
    refs = {"credit_note_id": str(note.id), "invoice_id": str(invoice.id)}
    email = Email(f"credit-note:{note.id}", "credit_note", note.customer_id, refs, content)
    await enqueue(session, email, as_of=note.issued_at)
