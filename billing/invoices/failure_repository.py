"""SQL of billing failures: the customers whose invoice could not be issued, and the anomaly that
says so to finance."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import BillingFailure


async def failure_for_update(session: AsyncSession, customer_id: uuid.UUID) -> BillingFailure | None:
    query = select(BillingFailure).where(col(BillingFailure.customer_id) == customer_id).with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def failures_of(session: AsyncSession, customer_ids: list[uuid.UUID]) -> dict[uuid.UUID, BillingFailure]:
    query = select(BillingFailure).where(col(BillingFailure.customer_id).in_(customer_ids))
    return {failure.customer_id: failure for failure in await session.exec(query)}


async def retry_times(session: AsyncSession) -> dict[uuid.UUID, datetime]:
    """When each failing customer may be tried again: one small read per billing run."""
    rows = await session.execute(text("SELECT customer_id, next_attempt_at FROM billing_failures"))
    return {customer_id: next_attempt_at for customer_id, next_attempt_at in rows}


async def delete_failure(session: AsyncSession, customer_id: uuid.UUID) -> int | None:
    """Forget a customer's failure; how many attempts it took, or None when there was none."""
    row = await session.execute(
        text("DELETE FROM billing_failures WHERE customer_id = :customer_id RETURNING attempts"),
        {"customer_id": customer_id},
    )
    found = row.first()
    return None if found is None else int(found[0])


async def resolve_open_anomalies(
    session: AsyncSession, kind: str, customer_id: uuid.UUID, *, note: str, actor: str, as_of: datetime
) -> int:
    """Close what is still open (or acknowledged) of one kind for one customer, with a note."""
    result = await session.execute(
        text(
            "UPDATE anomalies SET status = 'resolved', note = :note, status_by = :actor, status_at = :as_of "
            "WHERE kind = :kind AND customer_id = :customer_id AND status <> 'resolved'"
        ),
        {"kind": kind, "customer_id": customer_id, "note": note, "actor": actor, "as_of": as_of},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
