"""What lower parts of billing read and settle of an invoice's collection, without importing
collection itself: a credit note, a top-up, finance or dunning settles the invoice's outbox row
when the invoice is paid otherwise or given up on; a credit note asks whether the customer still
has failed collections; a trial's end asks for the customer's Stripe customer and default card."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


async def settle_outbox(session: AsyncSession, invoice_id: uuid.UUID, status: str, error: str | None) -> None:
    await session.execute(
        text("UPDATE collection_outbox SET status = :status, last_error = :error WHERE invoice_id = :invoice_id"),
        {"status": status, "error": error, "invoice_id": invoice_id},
    )


async def customers_with_failed_collection(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """Invoices of the customer still being dunned or given up on. A top-up whose payment failed
    is neither: nothing was owed (billing.credits.topups)."""
    row = await session.execute(
        text(
            "SELECT count(*) FROM collection_outbox o WHERE o.customer_id = :id "
            "AND (o.status = 'failed' OR o.first_failed_at IS NOT NULL AND o.status <> 'collected') "
            "AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = o.invoice_id AND i.kind = 'credit_purchase')"
        ),
        {"id": customer_id},
    )
    return int(row.scalar_one())


async def stripe_customer_of(session: AsyncSession, customer_id: uuid.UUID) -> tuple[str, str | None] | None:
    """(Stripe customer id, default card) of a customer, None before collection first needed one."""
    row = await session.execute(
        text("SELECT stripe_customer_id, default_payment_method FROM stripe_customers WHERE customer_id = :id"),
        {"id": customer_id},
    )
    found = row.first()
    return (found[0], found[1]) if found else None
