"""SQL of collection: the outbox and its attempts, the payments Stripe made for invoices (with what
was refunded and disputed since), Stripe customers and their default card. The Stripe events
received by webhook have theirs in :mod:`billing.collection.stripe_event_repository`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection.stripe_gateway import Charge
from billing.invoices.credit_notes_repository import STILL_DUE
from billing.models import (
    Invoice,
    StripeCustomer,
    StripeDispute,
    StripePayment,
)


async def stripe_customer_id_of(session: AsyncSession, customer_id: uuid.UUID) -> str | None:
    """The Stripe customer stored for a Tally customer, if one was made."""
    query = select(StripeCustomer).where(col(StripeCustomer.customer_id) == customer_id)
    found = (await session.exec(query)).first()
    return found.stripe_customer_id if found is not None else None


async def store_stripe_customer(
    session: AsyncSession, customer_id: uuid.UUID, stripe_customer_id: str, *, created_at: datetime
) -> str:
    """Keep the customer's Stripe customer once and answer the one stored: a concurrent first need
    that stored its own first wins (both got the same one from Stripe, by idempotency key)."""
    await session.execute(
        insert(StripeCustomer)
        .values(customer_id=customer_id, stripe_customer_id=stripe_customer_id, created_at=created_at)
        .on_conflict_do_nothing(index_elements=["customer_id"])
    )
    query = select(StripeCustomer).where(col(StripeCustomer.customer_id) == customer_id)
    return (await session.exec(query.execution_options(populate_existing=True))).one().stripe_customer_id


async def is_stripe_customer(session: AsyncSession, stripe_customer_id: str) -> bool:
    row = await session.execute(
        text("SELECT 1 FROM stripe_customers WHERE stripe_customer_id = :id"), {"id": stripe_customer_id}
    )
    return row.first() is not None


async def set_default_payment_method(session: AsyncSession, stripe_customer_id: str, method: str | None) -> None:
    await session.execute(
        text("UPDATE stripe_customers SET default_payment_method = :method WHERE stripe_customer_id = :id"),
        {"method": method, "id": stripe_customer_id},
    )


async def record_attempt(
    session: AsyncSession, invoice_id: uuid.UUID, attempt: int, charged: Charge, *, as_of: datetime
) -> bool:
    """Keep an attempt's outcome; False when it was already known. Only a pending outcome
    (``requires_action``, ``processing``) may still change, and only to another outcome."""
    row = await session.execute(
        text(
            "INSERT INTO payment_attempts (invoice_id, attempt, payment_intent_id, status, error, created_at) "
            "VALUES (:invoice_id, :attempt, :intent, :status, :error, :at) ON CONFLICT (invoice_id, attempt) "
            "DO UPDATE SET payment_intent_id = EXCLUDED.payment_intent_id, status = EXCLUDED.status, "
            "error = EXCLUDED.error WHERE payment_attempts.status IN ('requires_action', 'processing') "
            "AND payment_attempts.status <> EXCLUDED.status RETURNING attempt"
        ),
        {
            "invoice_id": invoice_id,
            "attempt": attempt,
            "intent": charged.payment_intent_id,
            "status": charged.status,
            "error": charged.error,
            "at": as_of,
        },
    )
    return row.first() is not None


async def remember_payment(
    session: AsyncSession,
    *,
    payment_intent_id: str,
    invoice: Invoice,
    charge_id: str | None,
    amount: int,
    paid_at: datetime,
    ledger_transaction_id: uuid.UUID,
) -> None:
    await session.execute(
        text(
            "INSERT INTO stripe_payments (payment_intent_id, invoice_id, customer_id, charge_id, amount, currency, "
            "refunded, disputed, paid_at, ledger_transaction_id) VALUES (:pi, :invoice_id, :customer_id, :charge_id, "
            ":amount, :currency, 0, 0, :paid_at, :transaction_id) ON CONFLICT (payment_intent_id) "
            "DO UPDATE SET charge_id = coalesce(stripe_payments.charge_id, EXCLUDED.charge_id)"
        ),
        {
            "pi": payment_intent_id,
            "invoice_id": invoice.id,
            "customer_id": invoice.customer_id,
            "charge_id": charge_id,
            "amount": amount,
            "currency": invoice.currency,
            "paid_at": paid_at,
            "transaction_id": ledger_transaction_id,
        },
    )


async def payment_for_update(
    session: AsyncSession, *, payment_intent_id: str | None, charge_id: str
) -> StripePayment | None:
    """The payment a refund or dispute is about: by its PaymentIntent when Stripe names it, else
    by its charge."""
    query = select(StripePayment).with_for_update()
    if payment_intent_id:
        query = query.where(col(StripePayment.payment_intent_id) == payment_intent_id)
    else:
        query = query.where(col(StripePayment.charge_id) == charge_id)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def set_refunded(session: AsyncSession, payment_intent_id: str, refunded: int) -> None:
    await session.execute(
        text("UPDATE stripe_payments SET refunded = :refunded WHERE payment_intent_id = :pi"),
        {"refunded": refunded, "pi": payment_intent_id},
    )


async def remember_dispute(
    session: AsyncSession,
    *,
    dispute_id: str,
    payment_intent_id: str,
    amount: int,
    currency: str,
    reason: str | None,
    status: str,
    opened_at: datetime,
    ledger_transaction_id: uuid.UUID,
) -> None:
    await session.execute(
        text(
            "INSERT INTO stripe_disputes (dispute_id, payment_intent_id, amount, currency, reason, status, opened_at, "
            "ledger_transaction_id) VALUES (:id, :pi, :amount, :currency, :reason, :status, :opened_at, :tx)"
        ),
        {
            "id": dispute_id,
            "pi": payment_intent_id,
            "amount": amount,
            "currency": currency,
            "reason": reason,
            "status": status,
            "opened_at": opened_at,
            "tx": ledger_transaction_id,
        },
    )
    await session.execute(
        text("UPDATE stripe_payments SET disputed = disputed + :amount WHERE payment_intent_id = :pi"),
        {"amount": amount, "pi": payment_intent_id},
    )


async def retry_outbox(
    session: AsyncSession, invoice_id: uuid.UUID, *, as_of: datetime, backoff: Callable[[int], timedelta], error: str
) -> None:
    """Try the same attempt again after ``backoff(retries so far)``: Stripe may have acted on a call
    that timed out, so the row stays in flight and the next claim looks for that attempt's charge
    before calling again."""
    retries = await session.execute(
        text(
            "UPDATE collection_outbox SET unavailable_retries = unavailable_retries + 1, last_error = :error "
            "WHERE invoice_id = :invoice_id RETURNING unavailable_retries"
        ),
        {"error": error, "invoice_id": invoice_id},
    )
    await session.execute(
        text("UPDATE collection_outbox SET next_attempt_at = :at WHERE invoice_id = :invoice_id"),
        {"at": as_of + backoff(retries.scalar_one()), "invoice_id": invoice_id},
    )


async def schedule_retry_after_failure(
    session: AsyncSession, invoice_id: uuid.UUID, *, failed_at: datetime, retry_at: datetime, error: str | None
) -> None:
    await session.execute(
        text(
            "UPDATE collection_outbox SET status = 'pending', next_attempt_at = :retry_at, last_error = :error, "
            "first_failed_at = coalesce(first_failed_at, :failed_at) WHERE invoice_id = :invoice_id"
        ),
        {"retry_at": retry_at, "error": error, "failed_at": failed_at, "invoice_id": invoice_id},
    )


async def first_failure(session: AsyncSession, invoice_id: uuid.UUID) -> datetime | None:
    row = await session.execute(
        text("SELECT first_failed_at FROM collection_outbox WHERE invoice_id = :id"), {"id": invoice_id}
    )
    return row.scalar_one_or_none()


async def failed_attempts(session: AsyncSession, invoice_id: uuid.UUID) -> int:
    row = await session.execute(
        text("SELECT count(*) FROM payment_attempts WHERE invoice_id = :id AND status = 'failed'"), {"id": invoice_id}
    )
    return int(row.scalar_one())


async def retry_now(session: AsyncSession, invoice_id: uuid.UUID, as_of: datetime) -> bool:
    """Put an invoice's collection back in the queue now; False when there is nothing to retry."""
    row = await session.execute(
        text(
            "UPDATE collection_outbox SET status = 'pending', next_attempt_at = :at "
            "WHERE invoice_id = :id AND status IN ('pending', 'failed', 'action_required') RETURNING invoice_id"
        ),
        {"at": as_of, "id": invoice_id},
    )
    return row.first() is not None


async def collections_of(session: AsyncSession, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    """Each invoice of the customer that had something to collect, newest first, with its attempts."""
    rows = await session.execute(
        text(
            "SELECT o.invoice_id, i.number, i.amount_due, i.currency, i.status AS invoice_status, o.status, "
            "o.attempts, o.next_attempt_at, o.first_failed_at, o.last_error, coalesce(("
            "  SELECT json_agg(json_build_object('number', a.attempt, 'payment_intent_id', a.payment_intent_id, "
            "  'status', a.status, 'error', a.error, 'attempted_at', a.created_at) ORDER BY a.attempt) "
            "  FROM payment_attempts a WHERE a.invoice_id = o.invoice_id), '[]') AS tries "
            "FROM collection_outbox o JOIN invoices i ON i.id = o.invoice_id WHERE o.customer_id = :id "
            "ORDER BY i.number DESC"
        ),
        {"id": customer_id},
    )
    return [dict(row._mapping) for row in rows]


async def payments_of(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[StripePayment, int]]:
    """The customer's payments, newest first, each with its invoice's number."""
    query = (
        select(StripePayment, Invoice.number)
        .join(Invoice, col(Invoice.id) == col(StripePayment.invoice_id))
        .where(col(StripePayment.customer_id) == customer_id)
        .order_by(col(StripePayment.paid_at).desc())
    )
    return [(payment, number) for payment, number in (await session.exec(query)).all()]


async def disputes_of(session: AsyncSession, customer_id: uuid.UUID) -> list[StripeDispute]:
    query = (
        select(StripeDispute)
        .join(StripePayment, col(StripePayment.payment_intent_id) == col(StripeDispute.payment_intent_id))
        .where(col(StripePayment.customer_id) == customer_id)
        .order_by(col(StripeDispute.opened_at).desc())
    )
    return list((await session.exec(query)).all())


class DueCollection(NamedTuple):
    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    attempts: int
    status: str
    still_due: int
    currency: str
    invoice_trace_id: str | None


async def next_due_collection_for_update(session: AsyncSession, *, as_of: datetime) -> DueCollection | None:
    """The outbox row whose attempt is due soonest (pending, or in flight past its lease), locked
    with SKIP LOCKED so workers share the queue, with what its invoice still owes after credit notes."""
    row = (
        await session.execute(
            text(
                f"SELECT o.invoice_id, o.customer_id, o.attempts, o.status, {STILL_DUE}, i.currency, i.trace_id "
                "FROM collection_outbox o JOIN invoices i ON i.id = o.invoice_id "
                "WHERE o.status IN ('pending', 'in_flight') AND o.next_attempt_at <= :as_of "
                "ORDER BY o.next_attempt_at LIMIT 1 FOR UPDATE OF o SKIP LOCKED"
            ),
            {"as_of": as_of},
        )
    ).first()
    return None if row is None else DueCollection(*row)


async def lease_collection(
    session: AsyncSession, invoice_id: uuid.UUID, *, attempt: int, lease_until: datetime
) -> None:
    """Mark the outbox row in flight under ``attempt`` until ``lease_until``, when another worker may claim it."""
    await session.execute(
        text(
            "UPDATE collection_outbox SET status = 'in_flight', attempts = :attempt, next_attempt_at = :lease "
            "WHERE invoice_id = :invoice_id"
        ),
        {"attempt": attempt, "lease": lease_until, "invoice_id": invoice_id},
    )
