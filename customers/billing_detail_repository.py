"""SQL of the history of customers' billing details."""

from __future__ import annotations

import uuid

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.models import BillingDetailChange


async def changes_of(session: AsyncSession, customer_id: uuid.UUID, *, limit: int) -> list[BillingDetailChange]:
    """Newest first, by the order they were written (the index by customer and id answers it)."""
    query = (
        select(BillingDetailChange)
        .where(col(BillingDetailChange.customer_id) == customer_id)
        .order_by(col(BillingDetailChange.id).desc())
        .limit(limit)
    )
    return list(await session.exec(query))
