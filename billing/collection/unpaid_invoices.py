"""What finance does with an unpaid invoice: retry the payment now, write it off as
uncollectible (receivable → bad debt), or void it (its ledger transactions reversed). The
invoice itself never changes but for its status; every money movement is a ledger transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection import repository as collection_repository
from billing.credits import topups
from billing.invoices import collection_state, credit_notes_repository, repository
from billing.invoices.events import emit_invoice_event
from billing.models import Invoice
from billing.webhook_payloads import invoice_number
from ledger import audit
from ledger.errors import InvalidInput, NotFound
from ledger.service import Entry, Leg, account, check_reason, claim, post, reverse_transaction, transaction_by_key


async def _open_invoice(
    session: AsyncSession, invoice_id: uuid.UUID, *, closing_as: str | None = None, keys: tuple[str, ...] = ()
) -> tuple[Invoice, bool]:
    """The unpaid invoice, locked, and whether this is a retry of the request that already closed
    it ``closing_as`` (a ledger transaction of this customer carries one of ``keys``): a retry
    answers with the invoice as it is, and changes nothing."""
    invoice = await repository.invoice_for_update(session, invoice_id)
    if invoice is None:
        raise NotFound("no such invoice", field="invoiceId")
    if invoice.status == closing_as:
        for key in keys:
            done = await transaction_by_key(session, key)
            if done is not None and done.customer_id == invoice.customer_id:
                return invoice, True
    if invoice.status != "issued":
        raise InvalidInput(f"the invoice is {invoice.status}; only an unpaid invoice can be", field="invoiceId")
    return invoice, False


async def _reread(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice:
    invoice = await repository.invoice_for_update(session, invoice_id)
    assert invoice is not None
    return invoice


async def retry_payment(session: AsyncSession, invoice_id: uuid.UUID, *, as_of: datetime) -> Invoice:
    invoice, _ = await _open_invoice(session, invoice_id)
    if not await collection_repository.retry_now(session, invoice.id, as_of):
        raise InvalidInput("a payment of this invoice is in flight or there is nothing to collect", field="invoiceId")
    return await _reread(session, invoice.id)


async def mark_uncollectible(
    session: AsyncSession, invoice_id: uuid.UUID, *, reason: str, actor: str, idempotency_key: str, as_of: datetime
) -> Invoice:
    """Write what is still due off to bad debt (what credit notes took off it is not due); the
    invoice stays, marked uncollectible."""
    invoice, retried = await _open_invoice(session, invoice_id, closing_as="uncollectible", keys=(idempotency_key,))
    if retried:
        return invoice
    if invoice.kind == "credit_purchase":  # a top-up posted no receivable: there is no debt to write off
        raise InvalidInput("a credit purchase is owed only once paid: void it instead", field="invoiceId")
    due = await credit_notes_repository.still_due(session, invoice.id)
    entry = Entry(
        kind="write_off",
        currency=invoice.currency,
        customer_id=invoice.customer_id,
        effective_at=as_of,
        actor=actor,
        reason=check_reason(reason),
        idempotency_key=idempotency_key,
        request={"invoice": str(invoice.id), "amount": due},
    )
    transaction, created = await claim(session, entry, as_of=as_of)
    if created:
        bad_debt = await account(session, "bad_debt", invoice.currency, as_of)
        receivable = await account(session, "receivable", invoice.currency, as_of, invoice.customer_id)
        await post(session, transaction, [Leg(bad_debt, due), Leg(receivable, -due)])
    await repository.set_invoice_status(session, invoice.id, "uncollectible")
    await collection_state.settle_outbox(session, invoice.id, "failed", "marked uncollectible")
    await _audit(session, invoice, "invoice.write_off", "uncollectible", actor=actor, reason=reason, as_of=as_of)
    return await _reread(session, invoice.id)


async def void_invoice(
    session: AsyncSession, invoice_id: uuid.UUID, *, reason: str, actor: str, idempotency_key: str, as_of: datetime
) -> Invoice:
    """Reverse what the invoice posted (its charge, and the credits it drew, which go back to
    their grants) and mark it void. A credit the invoice drew that has since expired or been voided
    makes the void refuse (the ledger says why). So does a credit note of it: the note already
    reversed part of the invoice, and voiding would reverse that part twice. Tells the product
    ``invoice.voided``."""
    invoice, retried = await _open_invoice(
        session, invoice_id, closing_as="void", keys=(f"{idempotency_key}:charge", f"{idempotency_key}:credits")
    )
    if retried:
        return invoice
    credited, _, _ = await credit_notes_repository.credited_of(session, invoice.id)
    if credited:
        raise InvalidInput(
            "the invoice has credit notes, which voiding would not undo: credit what is left instead",
            field="invoiceId",
        )
    for purpose, transaction_id in (
        ("charge", invoice.ledger_transaction_id),
        ("credits", invoice.credits_transaction_id),
    ):
        if transaction_id is not None:
            await reverse_transaction(
                session,
                transaction_id=transaction_id,
                reason=check_reason(reason),
                actor=actor,
                idempotency_key=f"{idempotency_key}:{purpose}",
                as_of=as_of,
            )
    await repository.set_invoice_status(session, invoice.id, "void")
    await collection_state.settle_outbox(session, invoice.id, "failed", "voided")
    await emit_invoice_event(
        session, "invoice.voided", f"invoice.voided:{invoice.id}", invoice, status="void", as_of=as_of
    )
    await topups.invoice_closed(session, invoice.id, why=f"invoice voided: {reason}", as_of=as_of)
    await _audit(session, invoice, "invoice.void", "void", actor=actor, reason=reason, as_of=as_of)
    return await _reread(session, invoice.id)


async def _audit(
    session: AsyncSession, invoice: Invoice, action: str, status: str, *, actor: str, reason: str, as_of: datetime
) -> None:
    await audit.record(
        session,
        actor=actor,
        action=action,
        subject_type="Invoice",
        subject_id=invoice_number(invoice.number),
        customer_id=invoice.customer_id,
        as_of=as_of,
        before={"status": "issued"},  # only an unpaid (issued) invoice is closed: _open_invoice
        after={"status": status, "reason": reason},
    )
