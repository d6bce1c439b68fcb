"""SQL of reconciliation: the ledger's side of the payments it compares with Stripe's, and its
results, the discrepancies found and the runs that found them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices.credit_notes_repository import STILL_DUE
from billing.models import ReconciliationDiscrepancy, ReconciliationRun
from customers.models import Customer


class PaymentWithInvoice(NamedTuple):
    payment_intent_id: str
    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    invoice_number: int
    invoice_status: str
    amount: int
    currency: str
    refunded: int


async def payments_since(session: AsyncSession, *, since: datetime) -> list[PaymentWithInvoice]:
    """The Stripe payments the ledger holds, paid since ``since``, oldest first, with their invoice."""
    rows = await session.execute(
        text(
            "SELECT p.payment_intent_id, p.invoice_id, p.customer_id, i.number, i.status, p.amount, p.currency, "
            "p.refunded FROM stripe_payments p JOIN invoices i ON i.id = p.invoice_id WHERE p.paid_at >= :since "
            "ORDER BY p.paid_at"
        ),
        {"since": since},
    )
    return [PaymentWithInvoice(*row) for row in rows]


async def invoice_customers_and_numbers(
    session: AsyncSession, ids: list[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """(id, customer, number) of each of these invoices that exists."""
    rows = await session.execute(
        text("SELECT id, customer_id, number FROM invoices WHERE id = ANY(:ids)"), {"ids": ids}
    )
    return [(invoice_id, customer_id, number) for invoice_id, customer_id, number in rows]


class PaidInvoice(NamedTuple):
    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    number: int
    amount_due: int
    currency: str


async def paid_invoices_without_payment(session: AsyncSession, *, since: datetime) -> list[PaidInvoice]:
    """Invoices issued since ``since``, paid in Tally while credit notes left something due, that no
    Stripe payment stands behind."""
    rows = await session.execute(
        text(
            f"SELECT i.id, i.customer_id, i.number, i.amount_due, i.currency FROM invoices i "
            f"WHERE i.status = 'paid' AND {STILL_DUE} > 0 AND i.issued_at >= :since "
            "AND NOT EXISTS (SELECT 1 FROM stripe_payments p WHERE p.invoice_id = i.id)"
        ),
        {"since": since},
    )
    return [PaidInvoice(*row) for row in rows]


async def record_discrepancy(
    session: AsyncSession,
    *,
    kind: str,
    object_id: str,
    invoice_id: uuid.UUID | None,
    customer_id: uuid.UUID | None,
    summary: str,
    tally_side: dict[str, Any] | None,
    stripe_side: dict[str, Any] | None,
    as_of: datetime,
) -> bool:
    """Insert the discrepancy once per (kind, object): True when it is new; a known one only takes
    both sides and its summary as seen now and when it was last seen (its status stays)."""
    row = await session.execute(
        text(
            "INSERT INTO reconciliation_discrepancies (id, kind, object_id, invoice_id, customer_id, summary, "
            "tally_side, stripe_side, detected_at, last_seen_at, status) VALUES (:id, :kind, :object_id, "
            ":invoice_id, :customer_id, :summary, CAST(:tally AS jsonb), CAST(:stripe AS jsonb), :as_of, :as_of, "
            "'open') ON CONFLICT (kind, object_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, "
            "tally_side = EXCLUDED.tally_side, stripe_side = EXCLUDED.stripe_side, summary = EXCLUDED.summary "
            "RETURNING (xmax = 0) AS inserted"
        ),
        {
            "id": uuid.uuid4(),
            "kind": kind,
            "object_id": object_id,
            "invoice_id": invoice_id,
            "customer_id": customer_id,
            "summary": summary,
            "tally": json.dumps(tally_side) if tally_side is not None else None,
            "stripe": json.dumps(stripe_side) if stripe_side is not None else None,
            "as_of": as_of,
        },
    )
    return bool(row.scalar_one())


async def record_run(session: AsyncSession, *, as_of: datetime, checked: int, discrepancies: int) -> None:
    await session.execute(
        text(
            "INSERT INTO reconciliation_runs (id, as_of, started_at, checked, discrepancies) "
            "VALUES (:id, :as_of, :as_of, :checked, :found)"
        ),
        {"id": uuid.uuid4(), "as_of": as_of, "checked": checked, "found": discrepancies},
    )


async def resolve_discrepancy(
    session: AsyncSession, discrepancy_id: uuid.UUID, *, note: str, actor: str, as_of: datetime
) -> bool:
    """Mark the discrepancy resolved with the note; False when there is no such discrepancy."""
    row = await session.execute(
        text(
            "UPDATE reconciliation_discrepancies SET status = 'resolved', note = :note, resolved_by = :actor, "
            "resolved_at = :as_of WHERE id = :id RETURNING id"
        ),
        {"note": note, "actor": actor, "as_of": as_of, "id": discrepancy_id},
    )
    return row.first() is not None


async def last_run_as_of(session: AsyncSession) -> datetime | None:
    row = await session.execute(text("SELECT max(as_of) FROM reconciliation_runs"))
    return row.scalar_one()


async def discrepancies(
    session: AsyncSession, *, status: str | None, limit: int, discrepancy_id: uuid.UUID | None = None
) -> list[tuple[ReconciliationDiscrepancy, str | None]]:
    """Reconciliation discrepancies (or one), newest first, each with its customer's external id."""
    query = (
        select(ReconciliationDiscrepancy, Customer.external_id)
        .outerjoin(Customer, col(Customer.id) == col(ReconciliationDiscrepancy.customer_id))
        .order_by(col(ReconciliationDiscrepancy.detected_at).desc(), col(ReconciliationDiscrepancy.kind))
        .limit(limit)
    )
    if status:
        query = query.where(col(ReconciliationDiscrepancy.status) == status)
    if discrepancy_id:
        query = query.where(col(ReconciliationDiscrepancy.id) == discrepancy_id)
    return [(row, external_id) for row, external_id in (await session.exec(query)).all()]


async def reconciliation_runs(session: AsyncSession, *, limit: int) -> list[ReconciliationRun]:
    query = select(ReconciliationRun).order_by(col(ReconciliationRun.as_of).desc()).limit(limit)
    return list((await session.exec(query)).all())
