"""The email outbox's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from notifications.models import EmailMessage

INSERT = text(
    "INSERT INTO email_messages (id, message_key, kind, customer_id, recipients, locale, refs, content, status, "
    "attempts, next_attempt_at, last_error, resend_of, created_at) "
    "VALUES (:id, :message_key, :kind, :customer_id, :recipients, :locale, CAST(:refs AS jsonb), "
    "CAST(:content AS jsonb), :status, 0, :created_at, :last_error, :resend_of, :created_at) "
    "ON CONFLICT (message_key) DO NOTHING RETURNING id"
)

# Pending messages older than the queue's age limit are skipped rather than sent late (email off
# for a while, or an outage): an invoice email from weeks ago would confuse more than help.
SKIP_STALE = text(
    "UPDATE email_messages SET status = 'skipped', next_attempt_at = :as_of, "
    "last_error = 'not sent within ' || :max_age_hours || ' hours of being queued' "
    "WHERE status = 'pending' AND next_attempt_at <= :as_of AND created_at < :oldest"
)

# A claim is a lease: the row stays 'sending' until the sender records the outcome; one whose
# lease ran out (a sender died) is due again and claimed like a pending one. next_attempt_at is
# the lease's end then, so one index serves both.
CLAIM = text(
    "WITH due AS ("
    "  SELECT id FROM email_messages WHERE status IN ('pending', 'sending') AND next_attempt_at <= :as_of "
    "  ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE email_messages m SET status = 'sending', attempts = m.attempts + 1, next_attempt_at = :lease_until, "
    "lease_until = :lease_until FROM due WHERE m.id = due.id RETURNING m.id"
)


async def insert(session: AsyncSession, row: dict[str, Any]) -> uuid.UUID | None:
    """Write the message unless its key is taken; its id, or None when it was already there."""
    found = (await session.execute(INSERT, row)).first()
    return found[0] if found else None


async def skip_stale(session: AsyncSession, *, as_of: datetime, max_age: timedelta) -> int:
    result = await session.execute(
        SKIP_STALE, {"as_of": as_of, "oldest": as_of - max_age, "max_age_hours": int(max_age.total_seconds() // 3600)}
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def claim(session: AsyncSession, *, as_of: datetime, lease: timedelta, limit: int) -> list[EmailMessage]:
    ids = [
        row[0] for row in await session.execute(CLAIM, {"as_of": as_of, "lease_until": as_of + lease, "limit": limit})
    ]
    return await by_ids(session, ids)


async def by_ids(session: AsyncSession, ids: list[uuid.UUID]) -> list[EmailMessage]:
    if not ids:
        return []
    found = await session.exec(
        select(EmailMessage)
        .where(col(EmailMessage.id).in_(ids))
        .order_by(col(EmailMessage.next_attempt_at), col(EmailMessage.id))
        .execution_options(populate_existing=True)
    )
    return list(found.all())


async def record_outcome(session: AsyncSession, message: EmailMessage, values: dict[str, Any]) -> bool:
    """Record what became of a claimed try, unless another sender has claimed the message since
    (its lease ran out): the try recorded is the one numbered ``message.attempts``."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    result = await session.execute(
        text(
            f"UPDATE email_messages SET {assignments}, lease_until = NULL "
            "WHERE id = :id AND status = 'sending' AND attempts = :attempts"
        ),
        {**values, "id": message.id, "attempts": message.attempts},
    )
    return bool(getattr(result, "rowcount", 0))


async def message_for_update(session: AsyncSession, message_id: uuid.UUID) -> EmailMessage | None:
    found = await session.exec(
        select(EmailMessage)
        .where(col(EmailMessage.id) == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.first()


async def waiting_resend(session: AsyncSession, original_id: uuid.UUID) -> EmailMessage | None:
    found = await session.exec(
        select(EmailMessage).where(
            col(EmailMessage.resend_of) == original_id, col(EmailMessage.status).in_(("pending", "sending"))
        )
    )
    return found.first()


async def resend_count(session: AsyncSession, original_id: uuid.UUID) -> int:
    row = (
        await session.execute(
            text("SELECT count(*) FROM email_messages WHERE resend_of = :id"),
            {"id": original_id},
        )
    ).one()
    return int(row[0])


async def messages(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID | None,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[EmailMessage]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(EmailMessage)
    if customer_id is not None:
        query = query.where(col(EmailMessage.customer_id) == customer_id)
    if status is not None:
        query = query.where(col(EmailMessage.status) == status)
    if before is not None:
        at, last_id = before
        query = query.where(
            (col(EmailMessage.created_at) < at)
            | ((col(EmailMessage.created_at) == at) & (col(EmailMessage.id) < last_id))
        )
    query = query.order_by(col(EmailMessage.created_at).desc(), col(EmailMessage.id).desc()).limit(limit)
    return list((await session.exec(query)).all())
