"""GraphQL of credit notes: the ``CreditNote`` type and a customer's notes (customers read their
own); ``createCreditNote``, whose payload names the invoice, sits above the invoice types in
:mod:`app.api.credit_note_mutations`."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from app.api.common import Connection, Money, connection, money, not_a_cursor, page_size
from app.api.permissions import requires
from app.api.scope import find_visible_customer
from app.auth import Capability
from app.invoice_documents import public_url
from billing.invoice_numbers import invoice_number
from billing.invoices import credit_notes
from billing.models import CreditNote as CreditNoteRow
from billing.models import CreditNoteLine as CreditNoteLineRow


@strawberry.enum(description="How a credit note is settled.")
class CreditNoteMethod(Enum):
    REFUND = "REFUND"
    CREDIT = "CREDIT"
    REDUCE_DUE = "REDUCE_DUE"


@strawberry.enum
class CreditNoteReason(Enum):
    DUPLICATE = "duplicate"
    PRODUCT_UNSATISFACTORY = "product_unsatisfactory"
    ORDER_CHANGE = "order_change"
    FRAUDULENT = "fraudulent"
    OTHER = "other"


@strawberry.enum
class CreditNoteStatus(Enum):
    ISSUED = "issued"
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"


@strawberry.type
class CreditNoteLine:
    position: int
    invoice_line_position: int = strawberry.field(description="The invoice line it takes back from.")
    description: str
    amount: Money


@strawberry.type(description="An immutable correction of an issued invoice, numbered in its own gapless series.")
class CreditNote:
    id: strawberry.ID
    number: str | None = strawberry.field(description="CN-000042; null for a dry run.")
    invoice_id: strawberry.ID
    customer_id: strawberry.ID
    issued_at: datetime
    amount: Money = strawberry.field(description="What the customer gets back, tax included.")
    tax: Money = strawberry.field(description="The part of the amount that is tax given back.")
    method: CreditNoteMethod = strawberry.field(
        description="REFUND: back to the card through Stripe. CREDIT: to the customer's credit balance. "
        "REDUCE_DUE: off what is still to collect on the invoice."
    )
    reason: CreditNoteReason
    note: str | None
    status: CreditNoteStatus
    lines: list[CreditNoteLine]
    row: strawberry.Private[CreditNoteRow]

    @strawberry.field
    async def invoice_number(self, info: Info) -> str:
        invoice = await info.context.loaders.invoice.load(self.row.invoice_id)
        return invoice_number(invoice.number)

    @strawberry.field(
        description="The credit note's PDF, for staff and the note's own customer (send the bearer token; add "
        "?locale=en|fr|de|es for another language): absolute when TALLY_PUBLIC_BASE_URL is set, else a path; "
        "null for a dry run."
    )
    def pdf_url(self, info: Info) -> str | None:
        if self.number is None:
            return None
        return public_url(info.context.settings, f"/v1/credit-notes/{self.row.id}/pdf")

    @classmethod
    def from_model(cls, row: CreditNoteRow, lines: list[CreditNoteLineRow], *, dry_run: bool = False) -> CreditNote:
        return cls(
            id=strawberry.ID(str(row.id)),
            number=None if dry_run else credit_notes.credit_note_number(row.number),
            invoice_id=strawberry.ID(str(row.invoice_id)),
            customer_id=strawberry.ID(str(row.customer_id)),
            issued_at=row.issued_at,
            amount=money(row.amount, row.currency),
            tax=money(row.tax_amount, row.currency),
            method=CreditNoteMethod(row.method),
            reason=CreditNoteReason(row.reason),
            note=row.note,
            status=CreditNoteStatus(row.status),
            lines=[
                CreditNoteLine(
                    position=line.position,
                    invoice_line_position=line.invoice_line_position,
                    description=line.description,
                    amount=money(line.amount, row.currency),
                )
                for line in lines
            ],
            row=row,
        )


async def notes_of_invoice(info: Info, invoice_id: uuid.UUID) -> list[CreditNote]:
    """An invoice's credit notes, batched for a list of invoices."""
    rows: list[CreditNoteRow] = await info.context.loaders.credit_notes_by_invoice.load(invoice_id)
    lines = await info.context.loaders.credit_note_lines.load_many([row.id for row in rows])
    return [CreditNote.from_model(row, found) for row, found in zip(rows, lines, strict=True)]


async def resolve_credit_notes(
    info: Info, customer_id: strawberry.ID, first: int | None = None, after: str | None = None
) -> Connection[CreditNote] | None:
    context = info.context
    customer = await find_visible_customer(context.session, context.viewer, customer_id=customer_id)
    if customer is None:
        return None
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    before = None
    if after is not None:
        digits = after.removeprefix("CN-")
        if not digits.isdigit() or len(digits) > 18:
            raise not_a_cursor()
        before = int(digits)
    rows = await credit_notes.credit_notes(info.context.session, customer.id, before_number=before, limit=limit + 1)
    lines = await info.context.loaders.credit_note_lines.load_many([row.id for row in rows])
    found = dict(zip([row.id for row in rows], lines, strict=True))
    return connection(
        rows,
        limit,
        lambda row: CreditNote.from_model(row, found[row.id]),
        lambda row: credit_notes.credit_note_number(row.number),
    )


@strawberry.type
class CreditNotesQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="A customer's credit notes, newest first; null when there is no such customer or not yours.",
    )
    async def credit_notes(
        self, info: Info, customer_id: strawberry.ID, first: int | None = None, after: str | None = None
    ) -> Connection[CreditNote] | None:
        return await resolve_credit_notes(info, customer_id, first, after)
