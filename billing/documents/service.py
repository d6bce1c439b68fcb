"""What the rest of Tally calls for invoice documents: the hosted page's HTML and the stored PDF,
and a credit note's stored PDF.

A PDF is rendered on its first request, not in the billing run (rendering is slow, and most
invoices are never opened), then stored and always served from storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.documents import repository
from billing.documents.credit_note import build_credit_note_document
from billing.documents.document import InvoiceDocument, Seller, build_document
from billing.documents.models import StoredCreditNoteDocument, StoredDocument
from billing.documents.render import render_credit_note_pdf, render_pdf
from billing.invoices import repository as billing_repository
from billing.models import CreditNote

INVOICE = "invoice"


@dataclass(frozen=True)
class InvoicePdf:
    number: str
    locale: str
    sha256: str
    pdf: bytes


async def invoice_document(
    session: AsyncSession, invoice_id: uuid.UUID, *, seller: Seller, locale: str | None = None
) -> InvoiceDocument:
    return await build_document(session, invoice_id, seller=seller, locale=locale)


async def invoice_pdf(
    session: AsyncSession, invoice_id: uuid.UUID, *, seller: Seller, as_of: datetime, locale: str | None = None
) -> InvoicePdf:
    """The invoice's PDF in ``locale`` (default: the buyer's): the stored one, else rendered now
    and stored (the caller commits). Two first requests at once store one document: the second
    insert does nothing and both return the stored bytes."""
    document = await build_document(session, invoice_id, seller=seller, locale=locale)
    stored = await repository.stored_document(session, invoice_id, INVOICE, document.locale, document.status)
    if stored is None:
        pdf = await asyncio.to_thread(render_pdf, document)  # seconds of CPU: off the event loop
        await repository.store_document(
            session,
            StoredDocument(
                invoice_id=invoice_id,
                kind=INVOICE,
                locale=document.locale,
                status=document.status,
                sha256=hashlib.sha256(pdf).hexdigest(),
                pdf=pdf,
                rendered_at=as_of,
            ),
        )
        stored = await repository.stored_document(session, invoice_id, INVOICE, document.locale, document.status)
        assert stored is not None
    return InvoicePdf(document.number, document.locale, stored.sha256, stored.pdf)


async def credit_note_pdf(
    session: AsyncSession, note_id: uuid.UUID, *, seller: Seller, as_of: datetime, locale: str | None = None
) -> InvoicePdf:
    """The credit note's PDF in ``locale`` (default: the invoice's buyer's), stored on first
    request like an invoice's (the caller commits; concurrent first requests store one)."""
    document = await build_credit_note_document(session, note_id, seller=seller, locale=locale)
    stored = await repository.stored_credit_note_document(session, note_id, document.locale)
    if stored is None:
        pdf = await asyncio.to_thread(render_credit_note_pdf, document)
        await repository.store_credit_note_document(
            session,
            StoredCreditNoteDocument(
                credit_note_id=note_id,
                locale=document.locale,
                sha256=hashlib.sha256(pdf).hexdigest(),
                pdf=pdf,
                rendered_at=as_of,
            ),
        )
        stored = await repository.stored_credit_note_document(session, note_id, document.locale)
        assert stored is not None
    return InvoicePdf(document.number, document.locale, stored.sha256, stored.pdf)


async def credit_note_customer(session: AsyncSession, note_id: uuid.UUID) -> uuid.UUID | None:
    """Whose credit note it is (None: no such note)."""
    note = await session.get(CreditNote, note_id)
    return note.customer_id if note else None


async def payable_intent(session: AsyncSession, invoice_id: uuid.UUID) -> str | None:
    """The PaymentIntent the customer may still pay on the hosted page: the latest attempt's,
    unless it succeeded or is being processed (None: nothing to pay online yet; the first
    automatic attempt has not run, or the invoice is settled)."""
    found = await repository.latest_payment_intent(session, invoice_id)
    if found is None or found[1] in ("succeeded", "processing"):
        return None
    return found[0]


async def invoice_customer(session: AsyncSession, invoice_id: uuid.UUID) -> uuid.UUID | None:
    """Whose invoice it is (None: no such invoice): who may download it is decided by the caller."""
    invoice = await billing_repository.invoice_by_id(session, invoice_id)
    return invoice.customer_id if invoice else None
