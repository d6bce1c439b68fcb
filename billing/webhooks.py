"""Stripe webhooks, the intake: verify the signature and its timestamp, store the event once by
its id, answer at once. Acting on events (payments, failures, refunds, disputes) happens apart
from the request, from the stored rows, so a duplicate or out-of-order delivery does no harm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.errors import InvalidInput

SIGNATURE_TOLERANCE_SECONDS = 300
# The event types collection acts on; any other type is stored and marked ignored.
HANDLED_TYPES = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.requires_action",
        "charge.refunded",
        "charge.dispute.created",
        "payment_method.attached",
        "customer.updated",
    }
)


class SignatureInvalid(InvalidInput):
    code = "SIGNATURE_INVALID"


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    type: str
    duplicate: bool
    status: str


def verified_event(payload: bytes, signature: str | None, secret: str | None) -> dict[str, Any]:
    """The event, if ``signature`` (the Stripe-Signature header) signs ``payload`` with the
    endpoint's secret within the tolerance; otherwise :class:`SignatureInvalid`."""
    if not secret:
        raise SignatureInvalid(
            "webhooks are off: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret", field="Stripe-Signature"
        )
    if not signature:
        raise SignatureInvalid("the Stripe-Signature header is missing", field="Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as error:
        raise SignatureInvalid(
            f"the signature does not verify: {error.user_message}", field="Stripe-Signature"
        ) from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidInput("the body is not JSON", field="body") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidInput("not a Stripe event: it needs an id and a type", field="body")
    return event


def _object_id(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    found = data.get("object") if isinstance(data, dict) else None
    object_id = found.get("id") if isinstance(found, dict) else None
    return object_id if isinstance(object_id, str) else None


async def receive(session: AsyncSession, event: dict[str, Any], *, as_of: datetime) -> ReceivedEvent:
    """Store a verified event once by its id (a redelivery only counts as one more delivery)."""
    status = "received" if event["type"] in HANDLED_TYPES else "ignored"
    created = event.get("created")
    row = await session.execute(
        text(
            "INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, received_at, deliveries, "
            "status) VALUES (:id, :type, :object_id, :created, :livemode, CAST(:payload AS jsonb), :received_at, 1, "
            ":status) ON CONFLICT (id) DO UPDATE SET deliveries = stripe_events.deliveries + 1 "
            "RETURNING status, deliveries"
        ),
        {
            "id": event["id"],
            "type": event["type"],
            "object_id": _object_id(event),
            "created": datetime.fromtimestamp(created, UTC) if isinstance(created, int) else as_of,
            "livemode": bool(event.get("livemode")),
            "payload": json.dumps(event),
            "received_at": as_of,
            "status": status,
        },
    )
    stored_status, deliveries = row.one()
    return ReceivedEvent(event["id"], event["type"], duplicate=deliveries > 1, status=stored_status)
