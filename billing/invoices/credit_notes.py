"""Credit notes: the correction of an issued invoice, partial or full, per line or by amount.

- A note never takes back more than is left to credit: the invoice's total less every earlier
  note; per line, never more than the line less what earlier notes took of it; a ``REFUND`` never
  more than the invoice's payments can still refund (paid, less refunded, disputed and refunds
  still queued); a ``REDUCE_DUE`` never more than is still to collect. The invoice row is locked
  (``SELECT … FOR UPDATE``) before anything is read, so concurrent notes of one invoice are
  checked one after the other and their sum can never pass the invoice.
- A note by amount is spread over the invoice's lines in proportion to what each has left to
  credit (largest remainder, so the parts add up to the amount exactly); its ledger transaction
  debits each line's revenue account by its part: revenue is reversed as it was booked.
- Settlement: ``REFUND`` credits ``refunds`` and queues a Stripe refund in the refund outbox (see
  :mod:`billing.collection.refunds`); when Stripe pays it back, the refund posting (``refunds`` debited,
  clearing credited) brings ``refunds`` back to zero, whoever posts it first (the worker or the
  ``charge.refunded`` webhook: both bring Tally's refunded total up to Stripe's, once).
  ``CREDIT`` credits the receivable and grants that to the customer's credit balance (source
  ``credit_note``). ``REDUCE_DUE`` credits the receivable: the collection outbox then collects
  only what is still due (:data:`billing.invoices.credit_notes_repository.STILL_DUE`).
- The idempotency key is the note's own unique key: the same key and request return the first
  note and write nothing; another request with it is refused.
- Tax: a note gives back the tax its share of the invoice carried. The invoice's total is its
  revenue (net of all tax) plus its tax; a note's amount (what the customer gets back) is split the
  same way, to the unit (:func:`split_gross`), so ``tax_payable`` is debited by its tax part and
  the revenue accounts by the rest. Credited lines are in the lines' own terms (net of exclusive
  tax, gross of inclusive tax): a note by amount credits the lines ``amount × subtotal / total``;
  a note per line gives back ``lines × total / subtotal``, rounded once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import emails
from billing.invoices import collection_state, repository
from billing.invoices import credit_notes_repository as notes_repository
from billing.invoices.errors import CreditExceeded, InvoiceVoid
from billing.invoices.events import mark_paid
from billing.invoices.invoicing import REVENUE_ACCOUNTS
from billing.models import (
    CREDIT_NOTE_METHODS,
    CREDIT_NOTE_REASONS,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    RefundOutbox,
)
from billing.webhook_payloads import credit_note_data, invoice_number
from customers import service as customers
from customers.credits import grant_credits
from ledger import audit
from ledger.errors import IdempotencyKeyReused, InvalidInput, NotFound
from ledger.money import to_major, to_minor_exact
from ledger.service import Entry, post_entry
from notifications.webhook_events import Event, emit
from pricing.tax import allocate

MAX_NOTE_LENGTH = 1000
MAX_KEY_LENGTH = 255
MAX_LINES = 1000


@dataclass(frozen=True)
class LineCredit:
    """What to take back of one invoice line (its ``position``), in major units."""

    position: int
    amount: Decimal


@dataclass(frozen=True)
class CreditNoteRequest:
    """Either ``amount`` (spread over the lines) or ``lines``, never both."""

    invoice_id: uuid.UUID
    method: str
    reason: str
    idempotency_key: str
    actor: str
    note: str | None = None
    amount: Decimal | None = None
    lines: tuple[LineCredit, ...] = ()


@dataclass(frozen=True)
class CreditNoteOutcome:
    """The note and its lines (not written for a dry run: no number, no id in the database)."""

    note: CreditNote
    lines: list[CreditNoteLine]
    invoice: Invoice
    dry_run: bool


def credit_note_number(number: int) -> str:
    return f"CN-{number:06d}"


def spread(amount: int, weights: list[int]) -> list[int]:
    """``amount`` split in proportion to ``weights`` (each > 0, ``amount`` at most their sum) by the
    largest remainder: the parts add up to ``amount`` and none passes its weight."""
    whole = sum(weights)
    parts = [amount * weight // whole for weight in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % whole), i))
    for i in order[: amount - sum(parts)]:
        parts[i] += 1
    return parts


def _check_request(request: CreditNoteRequest) -> tuple[str | None, str]:
    key = (request.idempotency_key or "").strip()
    if not key:
        raise InvalidInput("is required", field="idempotencyKey")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"must be at most {MAX_KEY_LENGTH} characters", field="idempotencyKey")
    if request.method not in CREDIT_NOTE_METHODS:
        raise InvalidInput(f"must be one of {', '.join(CREDIT_NOTE_METHODS)}", field="method")
    if request.reason not in CREDIT_NOTE_REASONS:
        raise InvalidInput(f"must be one of {', '.join(CREDIT_NOTE_REASONS)}", field="reason")
    note = (request.note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(f"must be at most {MAX_NOTE_LENGTH} characters", field="note")
    if (request.amount is None) == (not request.lines):
        raise InvalidInput("give either an amount or lines", field="amount")
    if len(request.lines) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines", field="lines")
    positions = [line.position for line in request.lines]
    if len(set(positions)) != len(positions):
        raise InvalidInput("each invoice line at most once", field="lines")
    return note, key


def _request_hash(request: CreditNoteRequest, note: str | None) -> str:
    document = {
        "invoice": str(request.invoice_id),
        "method": request.method,
        "reason": request.reason,
        "note": note,
        "amount": str(request.amount) if request.amount is not None else None,
        "lines": [[line.position, str(line.amount)] for line in request.lines],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _minor(amount: Decimal, currency: str, field: str) -> int:
    if not amount.is_finite():
        raise InvalidInput("must be a number", field=field)
    minor = to_minor_exact(amount, currency, field=field)
    if minor <= 0:
        raise InvalidInput("must be greater than zero", field=field)
    return minor


def _credits(
    request: CreditNoteRequest, invoice: Invoice, lines: list[InvoiceLine], per_line: dict[int, int]
) -> list[tuple[InvoiceLine, int]]:
    """Each invoice line credited and by how much (minor units), within what it has left."""
    by_position = {line.position: line for line in lines}
    left = {line.position: line.amount - per_line.get(line.position, 0) for line in lines}
    if request.amount is not None:
        amount = _scaled(_minor(request.amount, invoice.currency, "amount"), invoice.subtotal, invoice.total)
        open_lines = [line for line in lines if left[line.position] > 0]
        room = sum(left[line.position] for line in open_lines)
        if amount > room:
            raise CreditExceeded(
                f"is more than the invoice's lines have left to credit ({to_major(room, invoice.currency)})",
                field="amount",
            )
        parts = spread(amount, [left[line.position] for line in open_lines])
        return [(line, part) for line, part in zip(open_lines, parts, strict=True) if part]
    credited = []
    for index, wanted in enumerate(request.lines):
        line = by_position.get(wanted.position)
        if line is None:
            raise NotFound(f"invoice {invoice.number} has no line {wanted.position}", field=f"lines.{index}.position")
        amount = _minor(wanted.amount, invoice.currency, f"lines.{index}.amount")
        if amount > left[line.position]:
            raise CreditExceeded(
                f"is more than line {line.position} has left to credit "
                f"({to_major(max(left[line.position], 0), invoice.currency)})",
                field=f"lines.{index}.amount",
            )
        credited.append((line, amount))
    return credited


def split_gross(gross: int, invoice: Invoice) -> tuple[int, int]:
    """What of ``gross`` given back is revenue and what is tax, in the invoice's own proportion
    (its total is revenue net of all tax plus ``tax_amount``), to the unit."""
    if not invoice.tax_amount or invoice.total <= 0:
        return gross, 0
    revenue, tax = allocate(gross, [invoice.total - invoice.tax_amount, invoice.tax_amount])
    return revenue, tax


def _scaled(amount: int, numerator: int, denominator: int) -> int:
    """``amount × numerator / denominator`` rounded half up, in whole minor units."""
    return (2 * amount * numerator + denominator) // (2 * denominator)


def _ledger_legs(
    invoice: Invoice, credited: list[tuple[InvoiceLine, int]], gross: int, method: str
) -> list[tuple[uuid.UUID | None, str, int]]:
    """The revenue part of ``gross`` debited from each revenue account in proportion to what its
    lines give back, the tax part from ``tax_payable``; the settlement credited by ``gross``."""
    revenue, tax = split_gross(gross, invoice)
    by_account: dict[str, int] = {}
    for line, amount in credited:
        account = REVENUE_ACCOUNTS.get(line.kind, "usage_revenue")
        by_account[account] = by_account.get(account, 0) + amount
    accounts = sorted(by_account)
    shares = allocate(revenue, [by_account[account] for account in accounts])
    settlement: tuple[uuid.UUID | None, str, int] = (
        (None, "refunds", -gross) if method == "REFUND" else (invoice.customer_id, "receivable", -gross)
    )
    legs: list[tuple[uuid.UUID | None, str, int]] = [
        (None, account, share) for account, share in zip(accounts, shares, strict=True)
    ]
    if tax:
        legs.append((None, "tax_payable", tax))
    return [*legs, settlement]


async def create_credit_note(
    session: AsyncSession,
    request: CreditNoteRequest,
    *,
    as_of: datetime,
    dry_run: bool = False,
    customer_scope: uuid.UUID | None = None,
) -> CreditNoteOutcome:
    """Check and issue a credit note (the caller commits; a dry run writes nothing)."""
    note_text, key = _check_request(request)
    invoice = await repository.invoice_for_update(session, request.invoice_id)
    if invoice is None or (customer_scope is not None and invoice.customer_id != customer_scope):
        raise NotFound("no such invoice", field="invoiceId")
    hashed = _request_hash(request, note_text)
    existing = await notes_repository.note_by_key(session, key)
    if existing is not None:
        if existing.request_hash != hashed:
            raise IdempotencyKeyReused()
        found = await notes_repository.lines_of_notes(session, [existing.id])
        return CreditNoteOutcome(existing, found[existing.id], invoice, dry_run=False)
    if invoice.status == "void":
        raise InvoiceVoid()
    lines = (await repository.lines_of(session, [invoice.id])).get(invoice.id, [])
    credited_total, per_line, reduced = await notes_repository.credited_of(session, invoice.id)
    credited = _credits(request, invoice, lines, per_line)
    if request.amount is not None:
        amount = _minor(request.amount, invoice.currency, "amount")
    else:
        amount = _scaled(sum(part for _, part in credited), invoice.total, invoice.subtotal)
    left = invoice.total - credited_total
    if amount > left:
        raise CreditExceeded(
            f"is more than is left to credit on invoice {invoice.number} ({to_major(max(left, 0), invoice.currency)})",
            field="amount" if request.amount is not None else "lines",
        )
    payment_intent_id = await _check_settlement(session, invoice, request.method, amount, reduced)
    note = CreditNote(
        customer_id=invoice.customer_id,
        number=0,
        invoice_id=invoice.id,
        currency=invoice.currency,
        amount=amount,
        tax_amount=split_gross(amount, invoice)[1],
        method=request.method,
        reason=request.reason,
        note=note_text,
        status="refund_pending" if request.method == "REFUND" else "issued",
        ledger_transaction_id=uuid.uuid4(),
        actor=request.actor,
        idempotency_key=key,
        request_hash=hashed,
        issued_at=as_of,
    )
    note_lines = [
        CreditNoteLine(
            credit_note_id=note.id,
            position=position,
            invoice_id=invoice.id,
            invoice_line_position=line.position,
            description=line.description,
            revenue_account=REVENUE_ACCOUNTS.get(line.kind, "usage_revenue"),
            amount=part,
        )
        for position, (line, part) in enumerate(credited, start=1)
    ]
    if dry_run:
        return CreditNoteOutcome(note, note_lines, invoice, dry_run=True)
    await _write(
        session,
        note,
        note_lines,
        invoice,
        credited,
        payment_intent_id,
        still_due=invoice.amount_due - reduced,
        as_of=as_of,
    )
    return CreditNoteOutcome(note, note_lines, invoice, dry_run=False)


async def _check_settlement(
    session: AsyncSession, invoice: Invoice, method: str, amount: int, reduced: int
) -> str | None:
    """Refuse what the method cannot settle; for a refund, the payment it goes back to."""
    if method == "REDUCE_DUE":
        still_due = invoice.amount_due - reduced
        if invoice.status != "issued" or still_due <= 0:
            raise InvalidInput(f"invoice {invoice.number} has nothing left to collect", field="method")
        if amount > still_due:
            raise CreditExceeded(f"is more than is still due ({to_major(still_due, invoice.currency)})", field="amount")
        if await notes_repository.collection_state(session, invoice.id) in ("in_flight", "action_required"):
            raise InvalidInput(
                "a payment of this invoice is in flight or waits for the customer; try again later", field="method"
            )
        return None
    if method == "REFUND":
        payments = await notes_repository.refundable_payments(session, invoice.id)
        if not payments:
            raise InvalidInput(f"invoice {invoice.number} has no card payment to refund", field="method")
        payment, refundable = max(payments, key=lambda found: found[1])
        if amount > refundable:
            raise CreditExceeded(
                f"is more than its payment can still refund ({to_major(max(refundable, 0), invoice.currency)})",
                field="amount",
            )
        return payment.payment_intent_id
    return None


async def _write(
    session: AsyncSession,
    note: CreditNote,
    lines: list[CreditNoteLine],
    invoice: Invoice,
    credited: list[tuple[InvoiceLine, int]],
    payment_intent_id: str | None,
    *,
    still_due: int,
    as_of: datetime,
) -> None:
    reason = f"credit note for invoice {invoice.number} ({note.reason})"
    entry = Entry(
        kind="credit_note",
        currency=note.currency,
        customer_id=note.customer_id,
        effective_at=as_of,
        actor=note.actor,
        reason=reason,
        idempotency_key=f"credit_note:{note.id}",
        request={"invoice": str(invoice.id), "amount": note.amount, "method": note.method},
    )
    note.ledger_transaction_id = await post_entry(
        session, entry, _ledger_legs(invoice, credited, note.amount, note.method), as_of=as_of
    )
    if note.method == "CREDIT":
        grant = await grant_credits(
            session,
            customer_id=note.customer_id,
            currency=note.currency,
            amount=note.amount,
            reason=reason,
            actor=note.actor,
            idempotency_key=f"credit_note:{note.id}:grant",
            as_of=as_of,
            source="credit_note",
        )
        note.grant_id = grant.id
    note.number = await notes_repository.next_number(session)
    session.add(note)
    await session.flush()
    await audit.record(
        session,
        actor=note.actor,
        action="invoice.credit_note",
        subject_type="Invoice",
        subject_id=invoice_number(invoice.number),
        customer_id=note.customer_id,
        as_of=as_of,
        after={
            "credit_note": credit_note_number(note.number),
            "amount": to_major(note.amount, note.currency),
            "currency": note.currency,
            "method": note.method,
            "reason": note.reason,
        },
    )
    session.add_all(lines)
    await emails.credit_note_issued(session, note, invoice, number=credit_note_number(note.number))
    data = credit_note_data(note, invoice, number=credit_note_number(note.number))
    told = Event(
        f"credit_note.issued:{note.id}", "credit_note.issued", "CreditNote", str(note.id), data, note.customer_id
    )
    await emit(session, told, as_of=as_of)
    if payment_intent_id is not None:
        session.add(
            RefundOutbox(
                credit_note_id=note.id,
                invoice_id=invoice.id,
                payment_intent_id=payment_intent_id,
                amount=note.amount,
                currency=note.currency,
                status="pending",
                attempts=0,
                next_attempt_at=as_of,
                created_at=as_of,
            )
        )
    if note.method == "REDUCE_DUE" and note.amount == still_due:
        # Nothing left to collect: settled as a payment settles it (dunning ends with it).
        await mark_paid(session, invoice, as_of=as_of)
        await collection_state.settle_outbox(
            session, invoice.id, "collected", f"nothing left to collect: {credit_note_number(note.number)}"
        )
        if not await collection_state.customers_with_failed_collection(session, invoice.customer_id):
            await customers.set_status(session, invoice.customer_id, "ACTIVE")
    await session.flush()


async def credit_notes(
    session: AsyncSession, customer_id: uuid.UUID, *, before_number: int | None = None, limit: int = 50
) -> list[CreditNote]:
    return await notes_repository.notes_of_customer(session, customer_id, before_number=before_number, limit=limit)
