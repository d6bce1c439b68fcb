"""``createCreditNote`` (finance's: the ``adjust_balances`` capability; ``dryRun`` answers the note
and writes nothing). Its payload names both the note and the invoice, so it sits above
:mod:`app.api.billing` and :mod:`app.api.credit_notes`, and neither imports the other's types back."""

from __future__ import annotations

import uuid
from decimal import Decimal

import strawberry
from strawberry.types import Info

from app.api.billing import Invoice
from app.api.common import UserError, run_mutation
from app.api.credit_notes import CreditNote, CreditNoteMethod, CreditNoteReason
from app.api.permissions import requires
from app.auth import Capability
from billing.invoices import credit_notes
from ledger.errors import NotFound


@strawberry.input
class CreditNoteLineInput:
    position: int = strawberry.field(description="The invoice line's position (InvoiceLine.position).")
    amount: Decimal = strawberry.field(description="What to take back of it, in major units; at most what it has left.")


@strawberry.input
class CreateCreditNoteInput:
    invoice_id: strawberry.ID
    method: CreditNoteMethod
    reason: CreditNoteReason
    idempotency_key: str
    amount: Decimal | None = strawberry.field(
        default=None, description="By amount (major units), spread over the lines in proportion; or give lines."
    )
    lines: list[CreditNoteLineInput] | None = strawberry.field(default=None, description="Per line; or give amount.")
    note: str | None = strawberry.field(default=None, description="Free text; at most 1,000 characters.")
    dry_run: bool = strawberry.field(default=False, description="Answer the note and write nothing.")


@strawberry.type
class CreateCreditNotePayload:
    credit_note: CreditNote | None
    invoice: Invoice | None
    user_errors: list[UserError]


@strawberry.type
class CreditNotesMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Correct an issued invoice with a credit note: per line or by amount, refunded to the card, "
        "credited to the balance or taken off what is still due. Never more than is left to credit.",
    )
    async def create_credit_note(self, info: Info, input: CreateCreditNoteInput) -> CreateCreditNotePayload:
        context = info.context

        async def create() -> CreateCreditNotePayload:
            try:
                invoice_id = uuid.UUID(str(input.invoice_id))
            except ValueError:
                raise NotFound("no such invoice", field="invoiceId") from None
            outcome = await credit_notes.create_credit_note(
                context.session,
                credit_notes.CreditNoteRequest(
                    invoice_id=invoice_id,
                    method=input.method.value,
                    reason=input.reason.value,
                    idempotency_key=input.idempotency_key,
                    actor=context.viewer.actor,
                    note=input.note,
                    amount=input.amount,
                    lines=tuple(credit_notes.LineCredit(line.position, line.amount) for line in input.lines or ()),
                ),
                as_of=context.now(),
                dry_run=input.dry_run,
                customer_scope=context.viewer.customer_scope,
            )
            # Built before the transaction ends: a dry run rolls back, which expires the rows.
            return CreateCreditNotePayload(
                credit_note=CreditNote.from_model(outcome.note, outcome.lines, dry_run=outcome.dry_run),
                invoice=Invoice.from_model(outcome.invoice),
                user_errors=[],
            )

        payload, errors = await run_mutation(info, create, commit=not input.dry_run)
        return payload or CreateCreditNotePayload(credit_note=None, invoice=None, user_errors=errors)
