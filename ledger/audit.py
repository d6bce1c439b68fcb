"""The audit log: one row per action on money or a customer, written by the domain function that
takes the action, in its transaction. The ledger holds it because every domain may import the
ledger (customers, billing, the API and the CLI all reach their actions through a domain
function), so one ``record`` serves them all; a retried action that changes nothing records
nothing (callers record only what they created or changed)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.models import AuditEntry


def _plain(value: Any) -> Any:
    """A value as JSON keeps it exactly: decimals and times as text, ids as text."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: object,
    as_of: datetime,
    customer_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Record one action (``credits.grant``, ``promotion.update``…) in the caller's transaction."""
    await session.execute(
        insert(AuditEntry).values(
            recorded_at=as_of,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=str(subject_id),
            customer_id=customer_id,
            before=_plain(before),
            after=_plain(after),
        )
    )


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    customer_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


async def entries(session: AsyncSession, where: AuditFilter, *, before_id: int | None, limit: int) -> list[AuditEntry]:
    """Newest first, from ``before_id`` down (keyset paging on the identity)."""
    query = select(AuditEntry)
    if where.actor:
        query = query.where(col(AuditEntry.actor).ilike(f"%{_escaped(where.actor)}%", escape="\\"))
    if where.action:
        query = query.where(col(AuditEntry.action).startswith(where.action, autoescape=True))
    if where.customer_id:
        query = query.where(col(AuditEntry.customer_id) == where.customer_id)
    if where.since:
        query = query.where(col(AuditEntry.recorded_at) >= where.since)
    if where.until:
        query = query.where(col(AuditEntry.recorded_at) < where.until)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return list(await session.exec(query.order_by(col(AuditEntry.id).desc()).limit(limit)))


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
