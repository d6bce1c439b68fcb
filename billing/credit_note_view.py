"""A credit note as its document shows it: the plain view a template renders (the PDF and any
page), read from the same rows the ledger posted, so a document can never disagree with the note.
Amounts are in major units of the note's currency; ``tax`` is the part of the total that is tax."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import credit_notes_repository as notes_repository
from billing import repository
from billing.credit_notes import credit_note_number
from billing.models import CreditNote
from ledger.errors import NotFound
from ledger.money import to_major


@dataclass(frozen=True)
class CreditNoteViewLine:
    position: int
    invoice_line_position: int
    description: str
    amount: Decimal


@dataclass(frozen=True)
class CreditNoteView:
    """A credit note as a document shows it (the PDF template renders this): amounts in major units."""

    number: str
    issued_at: datetime
    invoice_number: str
    currency: str
    reason: str
    note: str | None
    method: str
    status: str
    lines: list[CreditNoteViewLine]
    tax: Decimal
    total: Decimal


async def credit_note_view(session: AsyncSession, note_id: uuid.UUID) -> CreditNoteView:
    note = await session.get(CreditNote, note_id)
    if note is None:
        raise NotFound("no such credit note", field="creditNoteId")
    invoice = await repository.invoice_by_id(session, note.invoice_id)
    assert invoice is not None
    lines = (await notes_repository.lines_of_notes(session, [note.id]))[note.id]
    return CreditNoteView(
        number=credit_note_number(note.number),
        issued_at=note.issued_at,
        invoice_number=f"INV-{invoice.number:06d}",
        currency=note.currency,
        reason=note.reason,
        note=note.note,
        method=note.method,
        status=note.status,
        lines=[
            CreditNoteViewLine(
                line.position, line.invoice_line_position, line.description, to_major(line.amount, note.currency)
            )
            for line in lines
        ],
        tax=to_major(note.tax_amount, note.currency),
        total=to_major(note.amount, note.currency),
    )
