"""The document view model of a credit note: what its PDF shows, read from the note's stored rows
and the invoice it corrects (never recomputed), in raw values the template formats for the locale.

The buyer is the invoice's (the snapshot kept on it at issue): a credit note corrects that invoice,
so it is addressed as the invoice was.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.documents.document import Buyer, Seller, buyer_of, invoice_number
from billing.documents.errors import InvoiceNotFound
from billing.documents.locales import check_locale
from billing.invoices import credit_notes_repository as notes_repository
from billing.invoices import repository
from billing.invoices.credit_notes import credit_note_number
from billing.models import CreditNote
from customers import repository as customers_repository
from customers.billing_details import billing_details_of


@dataclass(frozen=True)
class CreditedLine:
    description: str
    amount: int  # minor units, in the invoice line's own terms (before exclusive tax)


@dataclass(frozen=True)
class TaxRate:
    """A tax the corrected invoice carried (its name and rate name the tax given back)."""

    name: str
    rate: Decimal


@dataclass(frozen=True)
class CreditNoteDocument:
    credit_note_id: uuid.UUID
    number: str
    currency: str
    locale: str
    issued_at: datetime
    invoice_number: str
    invoice_issued_at: datetime
    reason: str
    note: str | None
    method: str
    seller: Seller
    buyer: Buyer
    lines: list[CreditedLine]
    tax: int  # the part of ``total`` that is tax given back
    total: int  # what the customer gets back, tax included
    taxes: list[TaxRate]
    tax_inclusive: bool  # the lines already include the tax (an inclusive-tax invoice)


class CreditNoteNotFound(InvoiceNotFound):
    """No such credit note (or not the viewer's): the same 404 as an invoice's."""


async def build_credit_note_document(
    session: AsyncSession, note_id: uuid.UUID, *, seller: Seller, locale: str | None = None
) -> CreditNoteDocument:
    """The note as its PDF shows it, in ``locale`` (default: the buyer's, as invoiced)."""
    if locale is not None:
        check_locale(locale)
    note = await session.get(CreditNote, note_id)
    if note is None:
        raise CreditNoteNotFound(f"no credit note {note_id}", field="creditNoteId")
    invoice = await repository.invoice_by_id(session, note.invoice_id)
    assert invoice is not None  # a foreign key
    details = invoice.billing_details
    if details is None:
        customer = (await customers_repository.get_by_ids(session, [invoice.customer_id]))[invoice.customer_id]
        details = billing_details_of(customer).as_json()
    buyer = buyer_of(details)
    rows = (await notes_repository.lines_of_notes(session, [note.id])).get(note.id, [])
    tax_rows = (await repository.tax_lines_of(session, [invoice.id])).get(invoice.id, [])
    charged = [row for row in tax_rows if not row.reverse_charge]
    return CreditNoteDocument(
        credit_note_id=note.id,
        number=credit_note_number(note.number),
        currency=note.currency,
        locale=locale or buyer.locale,
        issued_at=note.issued_at,
        invoice_number=invoice_number(invoice.number),
        invoice_issued_at=invoice.issued_at,
        reason=note.reason,
        note=note.note,
        method=note.method,
        seller=seller,
        buyer=replace(buyer, reverse_charge=True) if any(row.reverse_charge for row in tax_rows) else buyer,
        lines=[CreditedLine(row.description, row.amount) for row in rows],
        tax=note.tax_amount,
        total=note.amount,
        taxes=[TaxRate(row.name, row.rate) for row in charged],
        tax_inclusive=bool(charged) and all(row.inclusive for row in charged),
    )
