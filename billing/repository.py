"""SQL of invoices: the gapless number, inserts, pages, what a period was billed and rated on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Invoice, InvoiceLine, RatedPeriod
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


async def set_invoice_status(session: AsyncSession, invoice_id: uuid.UUID, status: str) -> None:
    await session.execute(
        text("UPDATE invoices SET status = :status WHERE id = :id"), {"status": status, "id": invoice_id}
    )
