"""The SQL of outbound webhooks: endpoints, fan-out, claiming due deliveries, recording attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from notifications.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint, WebhookEvent

INSERT_ENDPOINT = text(
    "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, secret, idempotency_key, "
    "created_at, updated_at) VALUES (:id, :url, :description, :event_types, true, :secret, :idempotency_key, "
    ":as_of, :as_of) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)

# Every event not yet fanned out becomes one delivery per enabled endpoint subscribed to its type,
# and is marked fanned out, in one statement: the unique (endpoint, event) makes a second pass (a
# sender that died before committing) queue nothing twice; SKIP LOCKED lets two senders share.
FAN_OUT = text(
    "WITH waiting AS ("
    "  SELECT id, type FROM webhook_events WHERE fanned_out_at IS NULL "
    "  ORDER BY created_at, id LIMIT :limit FOR UPDATE SKIP LOCKED), "
    "queued AS ("
    "  INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at) "
    "  SELECT gen_random_uuid(), endpoint.id, waiting.id, 'pending', 0, :as_of, :as_of "
    "  FROM waiting JOIN webhook_endpoints endpoint ON endpoint.enabled "
    "    AND (endpoint.event_types IS NULL OR waiting.type = ANY(endpoint.event_types)) "
    "  ON CONFLICT (endpoint_id, event_id) DO NOTHING) "
    "UPDATE webhook_events SET fanned_out_at = :as_of FROM waiting WHERE webhook_events.id = waiting.id RETURNING 1"
)

# A claim is a lease, as in the email outbox: 'sending' until the outcome is recorded; a claim
# whose lease ran out (the sender died mid-POST) is due again. Only enabled endpoints' deliveries
# are claimed: a disabled endpoint's wait, and go out when it is enabled again.
CLAIM = text(
    "WITH due AS ("
    "  SELECT delivery.id FROM webhook_deliveries delivery "
    "  JOIN webhook_endpoints endpoint ON endpoint.id = delivery.endpoint_id AND endpoint.enabled "
    "  WHERE delivery.status IN ('pending', 'sending') AND delivery.next_attempt_at <= :as_of "
    "  ORDER BY delivery.next_attempt_at, delivery.id LIMIT :limit FOR UPDATE OF delivery SKIP LOCKED) "
    "UPDATE webhook_deliveries d SET status = 'sending', attempts = d.attempts + 1, next_attempt_at = :lease_until, "
    "lease_until = :lease_until FROM due WHERE d.id = due.id RETURNING d.id"
)

RECORD_ATTEMPT = text(
    "WITH outcome AS ("
    "  UPDATE webhook_deliveries SET status = :status, next_attempt_at = :next_attempt_at, lease_until = NULL, "
    "  last_attempt_at = :as_of, last_response_status = :response_status, last_error = :error, "
    "  delivered_at = CASE WHEN :status = 'delivered' THEN CAST(:as_of AS timestamptz) ELSE delivered_at END "
    "  WHERE id = :delivery_id AND status = 'sending' AND attempts = :attempts RETURNING id) "
    "INSERT INTO webhook_delivery_attempts (id, delivery_id, attempted_at, response_status, error, latency_ms, "
    "response_excerpt) SELECT :attempt_id, id, :as_of, :response_status, :error, :latency_ms, :excerpt FROM outcome "
    "RETURNING id"
)

# The endpoint's run of failures: reset by a success, counted by a failure; an endpoint whose run
# is long enough in both attempts and time is disabled in the same statement (RETURNING says so).
ENDPOINT_SUCCEEDED = text(
    "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL "
    "WHERE id = :id AND consecutive_failures > 0"
)
ENDPOINT_FAILED = text(
    "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, "
    "failing_since = COALESCE(failing_since, :as_of), "
    "enabled = enabled AND NOT (consecutive_failures + 1 >= :failures "
    "  AND COALESCE(failing_since, :as_of) <= :failing_before), "
    "disabled_reason = CASE WHEN enabled AND consecutive_failures + 1 >= :failures "
    "  AND COALESCE(failing_since, :as_of) <= :failing_before THEN :reason ELSE disabled_reason END, "
    "updated_at = :as_of "
    "WHERE id = :id RETURNING enabled, consecutive_failures, failing_since, "
    "(SELECT enabled FROM webhook_endpoints was WHERE was.id = :id) AS was_enabled"
)

REPLAY = text(
    "WITH matching AS ("
    "  SELECT event.id FROM webhook_events event, webhook_endpoints endpoint "
    "  WHERE endpoint.id = :endpoint_id AND event.created_at >= :since AND event.created_at <= :as_of "
    "  AND (endpoint.event_types IS NULL OR event.type = ANY(endpoint.event_types))) "
    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at) "
    "SELECT gen_random_uuid(), :endpoint_id, matching.id, 'pending', 0, :as_of, :as_of FROM matching "
    "ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', attempts = 0, next_attempt_at = :as_of "
    "WHERE webhook_deliveries.status IN ('delivered', 'failed') RETURNING id"
)

COUNT_REPLAY = text(
    "SELECT count(*) FROM webhook_events event, webhook_endpoints endpoint "
    "WHERE endpoint.id = :endpoint_id AND event.created_at >= :since AND event.created_at <= :as_of "
    "AND (endpoint.event_types IS NULL OR event.type = ANY(endpoint.event_types))"
)


# Finished deliveries whose last activity is older than the retention, a batch at a time (their
# attempts go with them, ON DELETE CASCADE); by the partial expression index on that activity.
PRUNE_FINISHED = text(
    "DELETE FROM webhook_deliveries WHERE id = ANY(ARRAY("
    "  SELECT id FROM webhook_deliveries WHERE status IN ('delivered', 'failed') "
    "  AND coalesce(last_attempt_at, created_at) < :before LIMIT :limit))"
)


async def prune_finished(session: AsyncSession, *, before: datetime, limit: int) -> int:
    cursor = await session.execute(PRUNE_FINISHED, {"before": before, "limit": limit})
    return int(cursor.rowcount or 0)  # type: ignore[attr-defined]


async def insert_endpoint(session: AsyncSession, row: dict[str, Any]) -> uuid.UUID | None:
    found = (await session.execute(INSERT_ENDPOINT, row)).first()
    return found[0] if found else None


async def endpoint(session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.id) == endpoint_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def endpoint_by_key(session: AsyncSession, key: str) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.idempotency_key) == key)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def endpoint_count(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM webhook_endpoints"))).one()[0])


async def endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    return list((await session.exec(query)).all())


async def update_endpoint(session: AsyncSession, endpoint_id: uuid.UUID, values: dict[str, Any]) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    await session.execute(
        text(f"UPDATE webhook_endpoints SET {assignments} WHERE id = :id"), {**values, "id": endpoint_id}
    )


async def make_waiting_due(session: AsyncSession, endpoint_id: uuid.UUID, *, as_of: datetime) -> None:
    """Deliveries waiting for an endpoint that was off go at once when it is on again."""
    await session.execute(
        text(
            "UPDATE webhook_deliveries SET next_attempt_at = :as_of "
            "WHERE endpoint_id = :id AND status IN ('pending', 'sending') AND next_attempt_at > :as_of"
        ),
        {"id": endpoint_id, "as_of": as_of},
    )


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> bool:
    result = await session.execute(text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})
    return bool(getattr(result, "rowcount", 0))


async def fan_out(session: AsyncSession, *, as_of: datetime, limit: int) -> int:
    """How many events were fanned out (a data-modifying CTE runs whether or not it is read)."""
    return len((await session.execute(FAN_OUT, {"as_of": as_of, "limit": limit})).all())


async def claim(
    session: AsyncSession, *, as_of: datetime, lease_until: datetime, limit: int
) -> list[tuple[WebhookDelivery, WebhookEndpoint, WebhookEvent]]:
    ids = [row[0] for row in await session.execute(CLAIM, {"as_of": as_of, "lease_until": lease_until, "limit": limit})]
    if not ids:
        return []
    found = await session.exec(
        select(WebhookDelivery, WebhookEndpoint, WebhookEvent)
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.id).in_(ids))
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
        .execution_options(populate_existing=True)
    )
    return [(delivery, endpoint, event) for delivery, endpoint, event in found.all()]


async def record_attempt(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Record a claimed try's outcome and its attempt row, unless another sender has claimed the
    delivery since (its lease ran out): the try recorded is the one numbered ``attempts``."""
    return (await session.execute(RECORD_ATTEMPT, values)).first() is not None


async def endpoint_succeeded(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    await session.execute(ENDPOINT_SUCCEEDED, {"id": endpoint_id})


async def endpoint_failed(session: AsyncSession, values: dict[str, Any]) -> tuple[bool, int, datetime] | None:
    """(disabled by this failure, failures in the run, when the run began)."""
    row = (await session.execute(ENDPOINT_FAILED, values)).first()
    if row is None:
        return None
    enabled, failures, since, was_enabled = row
    return bool(was_enabled and not enabled), int(failures), since


async def replay(session: AsyncSession, values: dict[str, Any]) -> int:
    return len((await session.execute(REPLAY, values)).all())


async def count_replay(session: AsyncSession, values: dict[str, Any]) -> int:
    return int((await session.execute(COUNT_REPLAY, values)).one()[0])


async def delivery_for_update(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def requeue(session: AsyncSession, delivery_id: uuid.UUID, *, as_of: datetime) -> None:
    await session.execute(
        text("UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = :as_of WHERE id = :id"),
        {"id": delivery_id, "as_of": as_of},
    )


async def delivery_with_event(
    session: AsyncSession, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, WebhookEvent] | None:
    query = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.id) == delivery_id)
        .execution_options(populate_existing=True)
    )
    found = (await session.exec(query)).first()
    return (found[0], found[1]) if found else None


async def deliveries(
    session: AsyncSession,
    *,
    endpoint_id: uuid.UUID,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    """Newest first, keyset-paginated on (created_at, id), each with its event."""
    query = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    )
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status)
    if before is not None:
        at, last_id = before
        query = query.where(
            (col(WebhookDelivery.created_at) < at)
            | ((col(WebhookDelivery.created_at) == at) & (col(WebhookDelivery.id) < last_id))
        )
    query = query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc()).limit(limit)
    return [(delivery, event) for delivery, event in (await session.exec(query)).all()]


async def attempts_of(
    session: AsyncSession, delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[WebhookDeliveryAttempt]]:
    """Each delivery's attempts, newest first."""
    found: dict[uuid.UUID, list[WebhookDeliveryAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    query = (
        select(WebhookDeliveryAttempt)
        .where(col(WebhookDeliveryAttempt.delivery_id).in_(delivery_ids))
        .order_by(col(WebhookDeliveryAttempt.attempted_at).desc(), col(WebhookDeliveryAttempt.id))
    )
    for attempt in (await session.exec(query)).all():
        found[attempt.delivery_id].append(attempt)
    return found


async def delivery_counts(session: AsyncSession, endpoint_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Per endpoint, how many deliveries are in each status."""
    found: dict[uuid.UUID, dict[str, int]] = {endpoint_id: {} for endpoint_id in endpoint_ids}
    if not endpoint_ids:
        return found
    rows = await session.execute(
        text(
            "SELECT endpoint_id, status, count(*) FROM webhook_deliveries WHERE endpoint_id = ANY(:ids) "
            "GROUP BY endpoint_id, status"
        ),
        {"ids": endpoint_ids},
    )
    for endpoint_id, status, count in rows:
        found[endpoint_id][status] = int(count)
    return found
