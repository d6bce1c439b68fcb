"""SQL of customers: keyset pages, search, inserts that detect a taken external id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, and_, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.models import Customer, Subscription


# The same expression as the trigram index customers_search_trgm, so searches use it.
SEARCH_TEXT = literal_column("(external_id || ' ' || name || ' ' || coalesce(email, ''))")


async def insert_customer(session: AsyncSession, customer: Customer) -> bool:
    """Insert unless the external id is taken; the unique index decides, not a prior read."""
    statement = (
        insert(Customer)
        .values(
            id=customer.id, external_id=customer.external_id, name=customer.name,
            email=customer.email, currency=customer.currency, status=customer.status,
            created_at=customer.created_at,
        )
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(Customer.id)  # type: ignore[arg-type]
    )
    return (await session.execute(statement)).first() is not None


async def get_by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Customer]:
    query = select(Customer).where(Customer.id.in_(ids))  # type: ignore[attr-defined]
    return {c.id: c for c in (await session.exec(query)).scalars()}  # type: ignore[call-overload]


async def get_by_external_id(session: AsyncSession, external_id: str) -> Customer | None:
    query = select(Customer).where(Customer.external_id == external_id)
    return (await session.exec(query)).scalars().first()  # type: ignore[call-overload, no-any-return]


async def page(
    session: AsyncSession, *, search: str | None, after: tuple[datetime, uuid.UUID] | None,
    limit: int, only_customer_id: uuid.UUID | None = None,
) -> list[Customer]:
    """Newest first, keyset-paginated on (created_at, id) so pages never shift under inserts."""
    query: Select = select(Customer)
    if only_customer_id is not None:
        query = query.where(Customer.id == only_customer_id)
    if search:
        pattern = f"%{_escape_like(search.strip())}%"
        query = query.where(SEARCH_TEXT.ilike(pattern))
    if after is not None:
        query = query.where(
            tuple_(Customer.created_at, Customer.id) < tuple_(after[0], after[1])
        )
    query = query.order_by(Customer.created_at.desc(), Customer.id.desc()).limit(limit)  # type: ignore[attr-defined]
    return list((await session.exec(query)).scalars())  # type: ignore[call-overload]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def subscriptions_of(
    session: AsyncSession, customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Subscription]:
    query = select(Subscription).where(and_(Subscription.customer_id.in_(customer_ids)))  # type: ignore[attr-defined]
    return {s.customer_id: s for s in (await session.exec(query)).scalars()}  # type: ignore[call-overload]
