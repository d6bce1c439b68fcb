"""SQL of invoices: the gapless number, inserts, pages, what a period was billed and rated on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Invoice, InvoiceLine, RatedPeriod, StripePayment
from billing.stripe_gateway import Charge
from customers.models import Subscription


async def next_invoice_number(session: AsyncSession) -> int:
    """Take the next number. The counter row stays locked until this transaction ends, so take
    it last: issuing is serialized only for the few statements that follow."""
    row = await session.execute(
        text("UPDATE invoice_number_counter SET last_number = last_number + 1 WHERE id = 1 RETURNING last_number")
    )
    return int(row.scalar_one())


async def insert_invoice(session: AsyncSession, invoice: Invoice, lines: Sequence[InvoiceLine]) -> None:
    await session.execute(insert(Invoice).values(invoice.model_dump()))
    if lines:
        await session.execute(insert(InvoiceLine), [line.model_dump() for line in lines])


async def due_customers(session: AsyncSession, *, opening_by: datetime, closing_from: datetime) -> list[uuid.UUID]:
    """Customers who may have an invoice due: no opening invoice yet though started, or invoiced
    through a boundary old enough that a period (28 days at the shortest) may have closed since."""
    query = (
        select(col(Subscription.customer_id))
        .where(
            (col(Subscription.invoiced_through).is_(None) & (col(Subscription.started_at) <= opening_by))
            | (col(Subscription.invoiced_through) <= closing_from)
        )
        .order_by(col(Subscription.customer_id))
    )
    return list(await session.exec(query))


async def event_count(
    session: AsyncSession, customer_id: uuid.UUID, event_types: Sequence[str], start: datetime, end: datetime
) -> int:
    row = await session.execute(
        text(
            "SELECT count(*) FROM events WHERE customer_id = :customer_id AND event_type = ANY(:event_types) "
            "AND occurred_at >= :start AND occurred_at < :end"
        ),
        {"customer_id": customer_id, "event_types": list(event_types), "start": start, "end": end},
    )
    return int(row.scalar_one())


async def rated_periods_since(
    session: AsyncSession, customer_id: uuid.UUID, ended_after: datetime
) -> list[RatedPeriod]:
    query = (
        select(RatedPeriod)
        .where(col(RatedPeriod.customer_id) == customer_id, col(RatedPeriod.period_end) > ended_after)
        .order_by(col(RatedPeriod.period_start))
    )
    return list(await session.exec(query))


async def record_rated_period(
    session: AsyncSession, customer_id: uuid.UUID, start: datetime, end: datetime, event_count: int, as_of: datetime
) -> None:
    statement = insert(RatedPeriod).values(
        customer_id=customer_id, period_start=start, period_end=end, event_count=event_count, rated_at=as_of
    )
    statement = statement.on_conflict_do_update(
        index_elements=["customer_id", "period_start"],
        set_={"event_count": statement.excluded.event_count, "rated_at": statement.excluded.rated_at},
    )
    await session.execute(statement)


async def billed_usage(
    session: AsyncSession, customer_id: uuid.UUID, start: datetime, end: datetime
) -> dict[tuple[uuid.UUID | None, str], tuple[Decimal, Decimal]]:
    """What usage of ``[start, end)`` was billed so far, by (charge, dimensions): quantity, exact amount."""
    rows = await session.execute(
        text(
            "SELECT l.plan_charge_id, l.dimensions::text, sum(l.quantity), sum(l.amount_exact) "
            "FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE i.customer_id = :customer_id AND i.status <> 'void' AND l.kind IN ('usage', 'late_usage') "
            "AND l.service_start >= :start AND l.service_end <= :end "
            "GROUP BY l.plan_charge_id, l.dimensions::text"
        ),
        {"customer_id": customer_id, "start": start, "end": end},
    )
    return {
        (charge_id, dimensions): (quantity or Decimal(0), amount) for charge_id, dimensions, quantity, amount in rows
    }


async def invoices_page(
    session: AsyncSession, customer_id: uuid.UUID, *, before_number: int | None, limit: int
) -> list[Invoice]:
    """Newest first: numbers grow in the order invoices are issued, so they are the keyset."""
    query = select(Invoice).where(col(Invoice.customer_id) == customer_id)
    if before_number is not None:
        query = query.where(col(Invoice.number) < before_number)
    query = query.order_by(col(Invoice.number).desc()).limit(limit)
    return list(await session.exec(query))


async def invoices_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Invoice]:
    return {invoice.id: invoice for invoice in await session.exec(select(Invoice).where(col(Invoice.id).in_(ids)))}


async def lines_of(session: AsyncSession, invoice_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[InvoiceLine]]:
    query = (
        select(InvoiceLine)
        .where(col(InvoiceLine.invoice_id).in_(invoice_ids))
        .order_by(col(InvoiceLine.invoice_id), col(InvoiceLine.position))
    )
    grouped: dict[uuid.UUID, list[InvoiceLine]] = {invoice_id: [] for invoice_id in invoice_ids}
    for line in await session.exec(query):
        grouped[line.invoice_id].append(line)
    return grouped


async def invoice_by_number(session: AsyncSession, number: int) -> Invoice | None:
    return (await session.exec(select(Invoice).where(col(Invoice.number) == number))).first()


async def invoice_by_id(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    return await session.get(Invoice, invoice_id)


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


async def invoice_for_update(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    query = select(Invoice).where(col(Invoice.id) == invoice_id).with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def mark_paid(session: AsyncSession, invoice_id: uuid.UUID) -> None:
    """The one change an issued invoice allows: its status (the immutability trigger checks)."""
    await session.execute(
        text("UPDATE invoices SET status = 'paid' WHERE id = :id AND status = 'issued'"), {"id": invoice_id}
    )


async def queue_collection(session: AsyncSession, invoice: Invoice, *, as_of: datetime) -> None:
    """The outbox row of an invoice to collect, in the invoice's own transaction."""
    await session.execute(
        text(
            "INSERT INTO collection_outbox (invoice_id, customer_id, attempts, status, next_attempt_at, "
            "unavailable_retries, created_at) VALUES (:invoice_id, :customer_id, 0, 'pending', :at, 0, :at)"
        ),
        {"invoice_id": invoice.id, "customer_id": invoice.customer_id, "at": as_of},
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


async def settle_outbox(session: AsyncSession, invoice_id: uuid.UUID, status: str, error: str | None) -> None:
    await session.execute(
        text("UPDATE collection_outbox SET status = :status, last_error = :error WHERE invoice_id = :invoice_id"),
        {"status": status, "error": error, "invoice_id": invoice_id},
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


async def customers_with_failed_collection(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """Invoices of the customer still being dunned or given up on."""
    row = await session.execute(
        text(
            "SELECT count(*) FROM collection_outbox WHERE customer_id = :id "
            "AND (status = 'failed' OR first_failed_at IS NOT NULL AND status <> 'collected')"
        ),
        {"id": customer_id},
    )
    return int(row.scalar_one())


async def set_invoice_status(session: AsyncSession, invoice_id: uuid.UUID, status: str) -> None:
    await session.execute(
        text("UPDATE invoices SET status = :status WHERE id = :id"), {"status": status, "id": invoice_id}
    )


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
