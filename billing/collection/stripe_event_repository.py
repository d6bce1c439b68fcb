"""SQL of the Stripe events received by webhook: stored once by id, a queue that workers share
(SKIP LOCKED), each event's outcome and retry, and the lists finance reads."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import StripeEvent


async def store_stripe_event(
    session: AsyncSession,
    event: dict[str, Any],
    *,
    object_id: str | None,
    created: datetime,
    received_at: datetime,
    status: str,
    trace_id: str | None,
) -> tuple[str, int]:
    """Insert a Stripe event once by its id, or count one more delivery of it; its stored status
    and how many deliveries it has had."""
    row = await session.execute(
        text(
            "INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, received_at, deliveries, "
            "status, trace_id) VALUES (:id, :type, :object_id, :created, :livemode, CAST(:payload AS jsonb), "
            ":received_at, 1, :status, :trace_id) "
            "ON CONFLICT (id) DO UPDATE SET deliveries = stripe_events.deliveries + 1 RETURNING status, deliveries"
        ),
        {
            "id": event["id"],
            "type": event["type"],
            "object_id": object_id,
            "created": created,
            "livemode": bool(event.get("livemode")),
            "payload": json.dumps(event),
            "received_at": received_at,
            "status": status,
            "trace_id": trace_id,
        },
    )
    stored_status, deliveries = row.one()
    return stored_status, deliveries


class DueStripeEvent(NamedTuple):
    id: str
    type: str
    payload: dict[str, Any]
    trace_id: str | None
    attempts: int


# Waiting events, and failed ones whose retry is due, oldest first.
NEXT_EVENT = text("""
SELECT id, type, payload, trace_id, attempts FROM stripe_events
WHERE type = ANY(:types) AND (status = 'received' OR (status = 'failed' AND next_attempt_at <= :as_of))
ORDER BY created, id LIMIT 1 FOR UPDATE SKIP LOCKED
""")


async def next_due_stripe_event_for_update(
    session: AsyncSession, *, types: list[str], as_of: datetime
) -> DueStripeEvent | None:
    """The oldest event of one of ``types`` waiting or due for its retry, locked with SKIP LOCKED
    (workers share the queue)."""
    row = (await session.execute(NEXT_EVENT, {"types": types, "as_of": as_of})).first()
    return None if row is None else DueStripeEvent(*row)


async def record_stripe_event_outcome(
    session: AsyncSession,
    event_id: str,
    *,
    status: str,
    error: str | None,
    processed_at: datetime,
    attempts: int,
    next_attempt_at: datetime | None,
) -> None:
    await session.execute(
        text(
            "UPDATE stripe_events SET status = :status, error = :error, processed_at = :at, attempts = :attempts, "
            "next_attempt_at = :retry_at WHERE id = :id"
        ),
        {
            "status": status,
            "error": error,
            "at": processed_at,
            "attempts": attempts,
            "retry_at": next_attempt_at,
            "id": event_id,
        },
    )


async def requeue_failed_stripe_event(session: AsyncSession, event_id: str, *, types: list[str]) -> bool:
    """Put a failed event of one of ``types`` back in the queue now; False when there is none."""
    result = await session.execute(
        text(
            "UPDATE stripe_events SET status = 'received', next_attempt_at = NULL "
            "WHERE id = :id AND status = 'failed' AND type = ANY(:types) RETURNING id"
        ),
        {"id": event_id, "types": types},
    )
    return result.first() is not None


async def stripe_events(session: AsyncSession, *, status: str | None, limit: int) -> list[StripeEvent]:
    """Stored Stripe events, newest first (their payloads stay out of lists)."""
    query = select(StripeEvent).order_by(col(StripeEvent.received_at).desc(), col(StripeEvent.id)).limit(limit)
    if status:
        query = query.where(col(StripeEvent.status) == status)
    return list((await session.exec(query)).all())


async def stripe_events_by_id(session: AsyncSession, ids: list[str]) -> list[StripeEvent]:
    query = select(StripeEvent).where(col(StripeEvent.id).in_(ids)).execution_options(populate_existing=True)
    return list((await session.exec(query)).all())
