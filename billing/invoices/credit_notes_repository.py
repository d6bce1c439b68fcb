"""SQL of credit notes: what an invoice has already had credited (in total, per line, per method),
what its payments can still refund, the note's gapless number, and the refund outbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import CreditNote, CreditNoteLine, RefundOutbox, StripePayment

#: What is still to collect of an invoice ``i``: its amount due less what ``REDUCE_DUE`` credit
#: notes took off it. The collection outbox charges this, and a payment must match it.
# A bigint like the amounts it is read beside (sum() of bigints is numeric).
STILL_DUE = (
    "(i.amount_due - coalesce((SELECT sum(n.amount) FROM credit_notes n "
    "WHERE n.invoice_id = i.id AND n.method = 'REDUCE_DUE'), 0))::bigint"
)


async def still_due(session: AsyncSession, invoice_id: uuid.UUID) -> int:
    row = await session.execute(text(f"SELECT {STILL_DUE} FROM invoices i WHERE i.id = :id"), {"id": invoice_id})
    return int(row.scalar_one())


async def note_by_key(session: AsyncSession, idempotency_key: str) -> CreditNote | None:
    query = select(CreditNote).where(col(CreditNote.idempotency_key) == idempotency_key)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def credited_of(session: AsyncSession, invoice_id: uuid.UUID) -> tuple[int, dict[int, int], int]:
    """(total credited, credited per invoice line position, taken off what was due) of an invoice.
    Read after the invoice row is locked, so no concurrent note of the same invoice is missed."""
    totals = await session.execute(
        text(
            "SELECT coalesce(sum(amount), 0), coalesce(sum(amount) FILTER (WHERE method = 'REDUCE_DUE'), 0) "
            "FROM credit_notes WHERE invoice_id = :id"
        ),
        {"id": invoice_id},
    )
    total, reduced = totals.one()
    per_line = await session.execute(
        text(
            "SELECT invoice_line_position, sum(amount) FROM credit_note_lines WHERE invoice_id = :id "
            "GROUP BY invoice_line_position"
        ),
        {"id": invoice_id},
    )
    return int(total), {int(position): int(amount) for position, amount in per_line}, int(reduced)


async def refundable_payments(session: AsyncSession, invoice_id: uuid.UUID) -> list[tuple[StripePayment, int]]:
    """Each succeeded payment of the invoice, locked, with what it can still refund: paid, less
    refunded (as Stripe reported it) and disputed, less refunds queued and not yet reported."""
    query = (
        select(StripePayment)
        .where(col(StripePayment.invoice_id) == invoice_id)
        .order_by(col(StripePayment.paid_at))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    payments = list((await session.exec(query)).all())
    queued = await session.execute(
        text(
            "SELECT payment_intent_id, sum(amount) FROM refund_outbox WHERE invoice_id = :id "
            "AND status IN ('pending', 'in_flight') GROUP BY payment_intent_id"
        ),
        {"id": invoice_id},
    )
    pending = {intent: int(amount) for intent, amount in queued}
    return [(p, p.amount - p.refunded - p.disputed - pending.get(p.payment_intent_id, 0)) for p in payments]


async def collection_state(session: AsyncSession, invoice_id: uuid.UUID) -> str | None:
    """The invoice's collection status, its outbox row locked: a claim for a payment waits, or is
    seen, so no PaymentIntent is ever made for the amount due before a reduction."""
    row = await session.execute(
        text("SELECT status FROM collection_outbox WHERE invoice_id = :id FOR UPDATE"), {"id": invoice_id}
    )
    return row.scalar_one_or_none()


async def next_number(session: AsyncSession) -> int:
    """The next credit note number, taken in the note's own transaction (a rollback gives it back)."""
    row = await session.execute(
        text("UPDATE credit_note_number_counter SET last_number = last_number + 1 WHERE id = 1 RETURNING last_number")
    )
    return int(row.scalar_one())


async def notes_of_customer(
    session: AsyncSession, customer_id: uuid.UUID, *, before_number: int | None, limit: int
) -> list[CreditNote]:
    query = select(CreditNote).where(col(CreditNote.customer_id) == customer_id)
    if before_number is not None:
        query = query.where(col(CreditNote.number) < before_number)
    return list((await session.exec(query.order_by(col(CreditNote.number).desc()).limit(limit))).all())


async def notes_of_invoices(
    session: AsyncSession, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[CreditNote]]:
    query = select(CreditNote).where(col(CreditNote.invoice_id).in_(invoice_ids)).order_by(col(CreditNote.number))
    found: dict[uuid.UUID, list[CreditNote]] = {invoice_id: [] for invoice_id in invoice_ids}
    for note in (await session.exec(query)).all():
        found[note.invoice_id].append(note)
    return found


async def lines_of_notes(session: AsyncSession, note_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[CreditNoteLine]]:
    query = (
        select(CreditNoteLine)
        .where(col(CreditNoteLine.credit_note_id).in_(note_ids))
        .order_by(col(CreditNoteLine.credit_note_id), col(CreditNoteLine.position))
    )
    found: dict[uuid.UUID, list[CreditNoteLine]] = {note_id: [] for note_id in note_ids}
    for line in (await session.exec(query)).all():
        found[line.credit_note_id].append(line)
    return found


async def set_status(session: AsyncSession, note_id: uuid.UUID, status: str) -> None:
    await session.execute(
        text("UPDATE credit_notes SET status = :status WHERE id = :id"), {"status": status, "id": note_id}
    )


async def claim_refund(
    session: AsyncSession, *, as_of: datetime, lease_until: datetime
) -> tuple[RefundOutbox, bool] | None:
    """The next refund to send, leased (SKIP LOCKED), and whether an earlier claim's lease ran out
    (it may have reached Stripe)."""
    query = (
        select(RefundOutbox)
        .where(col(RefundOutbox.status).in_(("pending", "in_flight")), col(RefundOutbox.next_attempt_at) <= as_of)
        .order_by(col(RefundOutbox.next_attempt_at))
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    row = (await session.exec(query)).first()
    if row is None:
        return None
    reclaimed = row.status == "in_flight"
    await session.execute(
        text(
            "UPDATE refund_outbox SET status = 'in_flight', attempts = attempts + 1, next_attempt_at = :lease "
            "WHERE credit_note_id = :id"
        ),
        {"lease": lease_until, "id": row.credit_note_id},
    )
    return row, reclaimed


async def settle_refund(
    session: AsyncSession, note_id: uuid.UUID, *, status: str, refund_id: str | None, error: str | None
) -> None:
    await session.execute(
        text(
            "UPDATE refund_outbox SET status = :status, stripe_refund_id = coalesce(:refund, stripe_refund_id), "
            "last_error = :error WHERE credit_note_id = :id"
        ),
        {"status": status, "refund": refund_id, "error": error, "id": note_id},
    )


async def retry_refund(session: AsyncSession, note_id: uuid.UUID, *, at: datetime, error: str) -> None:
    await session.execute(
        text("UPDATE refund_outbox SET next_attempt_at = :at, last_error = :error WHERE credit_note_id = :id"),
        {"at": at, "error": error, "id": note_id},
    )
