"""What the rest of Tally calls to tell the product something happened: :func:`emit`, in the
transaction of the change itself (a transactional outbox), so an event exists exactly when its
change committed, and sending it never holds up or fails the change. The webhook sender fans each
event out to the endpoints subscribed to its type and delivers it after commit.

Exactly once per ``key``: the key is unique in ``webhook_events``; a retried change (a billing
run re-run, a webhook from Stripe received twice) emits nothing more. Delivery is at least once
and in no promised order; each event carries its resource's version so a receiver can keep the
newest.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

API_VERSION = "2026-12-01"

# Every type an endpoint may subscribe to, with what it tells of. Keep the README's table in step.
EVENT_TYPES: dict[str, str] = {
    "customer.created": "a customer was created",
    "customer.updated": "a customer's details changed",
    "subscription.created": "a customer subscribed to a plan",
    "subscription.trial_ending": "a subscription's trial ends within three days",
    "subscription.changed": "a subscription moved to another plan version",
    "subscription.paused": "a subscription was paused",
    "subscription.resumed": "a paused subscription was unpaused, or a scheduled cancel revoked",
    "subscription.cancelled": "a subscription was cancelled",
    "invoice.issued": "an invoice was issued",
    "invoice.paid": "an invoice was paid in full",
    "invoice.payment_failed": "a payment attempt for an invoice failed",
    "invoice.voided": "an invoice was voided",
    "credit_note.issued": "a credit note was issued against an invoice",
    "credits.granted": "credits were granted to a customer",
    "credits.balance_low": "a customer's credit balance fell below its alert threshold",
    "credits.expired": "unused credits of a grant expired",
    "usage_alert.fired": "a usage or spend alert crossed one of its thresholds",
    "entitlement.exhausted": "a customer used all of a metered entitlement",
    "anomaly.opened": "a billing or metering anomaly was opened",
}

# The event and its resource's version in one statement: the version row is bumped only for a
# key not seen before (a retried change leaves it be), and its row lock orders the events of one
# resource. Two transactions racing with one key may both bump it: versions grow, maybe with a gap.
EMIT = text(
    "WITH fresh AS (SELECT NOT EXISTS (SELECT 1 FROM webhook_events WHERE event_key = :event_key) AS new), "
    "version AS ("
    "  INSERT INTO webhook_resource_versions (resource_type, resource_id, version) "
    "  SELECT :resource_type, :resource_id, 1 FROM fresh WHERE fresh.new "
    "  ON CONFLICT (resource_type, resource_id) "
    "  DO UPDATE SET version = webhook_resource_versions.version + 1 RETURNING version) "
    "INSERT INTO webhook_events (id, event_key, type, api_version, customer_id, resource_type, resource_id, "
    "resource_version, data, created_at) "
    "SELECT :id, :event_key, :type, :api_version, :customer_id, :resource_type, :resource_id, version.version, "
    "CAST(:data AS jsonb), :created_at FROM version "
    "ON CONFLICT (event_key) DO NOTHING RETURNING id"
)


@dataclass(frozen=True)
class Event:
    """A thing that happened. ``key`` is its exactly-once key (e.g. ``invoice.issued:<invoice id>``);
    ``resource_type`` is the GraphQL type ``data`` shows (``Invoice``), with its id; ``data`` is
    JSON: camelCase fields of that type, money as its ``Money`` shows it (a decimal string in major
    units beside the currency), moments as ISO strings."""

    key: str
    type: str
    resource_type: str
    resource_id: str
    data: dict[str, Any]
    customer_id: uuid.UUID | None = None


async def emit(session: AsyncSession, event: Event, *, as_of: datetime) -> uuid.UUID | None:
    """Record ``event`` in the caller's transaction; its id, or None when its key was recorded
    before. The caller commits (or rolls back, and nothing is told)."""
    if event.type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event.type!r}")
    found = (
        await session.execute(
            EMIT,
            {
                "id": uuid.uuid4(),
                "event_key": event.key,
                "type": event.type,
                "api_version": API_VERSION,
                "customer_id": event.customer_id,
                "resource_type": event.resource_type,
                "resource_id": event.resource_id,
                "data": json.dumps(event.data),
                "created_at": as_of,
            },
        )
    ).first()
    return found[0] if found else None
