"""SQL of reconciliation's results: the discrepancies found and the runs that found them."""

from __future__ import annotations

import uuid

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import ReconciliationDiscrepancy, ReconciliationRun
from customers.models import Customer


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
