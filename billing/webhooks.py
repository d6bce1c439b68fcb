"""Stripe webhooks: the intake verifies the signature and its timestamp, stores the event once by
its id and answers at once; processing acts on stored events apart from the request (a job), each
effect keyed in the ledger by Stripe's object id, so a duplicate delivery has no second effect.
Processed so far: ``payment_intent.succeeded`` (the payment of a Tally invoice).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import repository
from ledger.errors import InvalidInput, TallyError
from ledger.service import Entry, Leg, account, claim, post

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


@dataclass(frozen=True)
class Outcome:
    status: str  # processed, ignored or failed
    error: str | None = None


async def process_next(session: AsyncSession, *, as_of: datetime) -> str | None:
    """Act on the oldest stored event a handler exists for (SKIP LOCKED: workers share the queue);
    return its id, or None when none waits. The caller commits."""
    row = (
        await session.execute(
            text(
                "SELECT id, type, payload FROM stripe_events WHERE status = 'received' AND type = ANY(:types) "
                "ORDER BY created, id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            {"types": sorted(HANDLERS)},
        )
    ).first()
    if row is None:
        return None
    event_id, event_type, payload = row
    try:
        outcome = await HANDLERS[event_type](session, payload, as_of)
    except TallyError as error:
        outcome = Outcome("failed", error.message)
    await session.execute(
        text("UPDATE stripe_events SET status = :status, error = :error, processed_at = :at WHERE id = :id"),
        {"status": outcome.status, "error": outcome.error, "at": as_of, "id": event_id},
    )
    return str(event_id)


async def _payment_succeeded(session: AsyncSession, event: dict[str, Any], as_of: datetime) -> Outcome:
    intent = event["data"]["object"]
    invoice_ref = (intent.get("metadata") or {}).get("tally_invoice_id")
    if not invoice_ref:
        return Outcome("ignored", "not the payment of a Tally invoice (no tally_invoice_id in its metadata)")
    try:
        invoice_id = uuid.UUID(invoice_ref)
    except ValueError:
        return Outcome("failed", f"no invoice {invoice_ref}")
    paid_at = datetime.fromtimestamp(intent.get("created") or as_of.timestamp(), UTC)
    amount = intent.get("amount_received") or intent.get("amount")
    error = await post_invoice_payment(
        session,
        invoice_id,
        payment_intent_id=intent["id"],
        amount=amount,
        currency=str(intent.get("currency", "")).upper(),
        paid_at=paid_at,
        as_of=as_of,
    )
    return Outcome("failed", error) if error else Outcome("processed")


async def post_invoice_payment(
    session: AsyncSession,
    invoice_id: uuid.UUID,
    *,
    payment_intent_id: str,
    amount: int,
    currency: str,
    paid_at: datetime,
    as_of: datetime,
) -> str | None:
    """Post a payment (Stripe clearing debited, the receivable credited) and mark the invoice
    paid; the ledger key is the PaymentIntent's id, so the collection worker and the webhook can
    both report it and it is posted once. Returns why it could not be posted, or None."""
    invoice = await repository.invoice_for_update(session, invoice_id)
    if invoice is None:
        return f"no invoice {invoice_id}"
    if currency != invoice.currency or amount != invoice.amount_due:
        return (
            f"paid {amount} {currency} for invoice {invoice.number}, "
            f"which is due {invoice.amount_due} {invoice.currency}"
        )
    entry = Entry(
        kind="payment",
        currency=currency,
        customer_id=invoice.customer_id,
        effective_at=paid_at,
        actor="stripe",
        reason=f"payment {payment_intent_id} of invoice {invoice.number}",
        idempotency_key=f"stripe:payment:{payment_intent_id}",
        request={"invoice": str(invoice.id), "amount": amount},
    )
    transaction, created = await claim(session, entry, as_of=as_of)
    if created:
        clearing = await account(session, "stripe_clearing", currency, as_of)
        receivable = await account(session, "receivable", currency, as_of, invoice.customer_id)
        await post(session, transaction, [Leg(clearing, amount), Leg(receivable, -amount)])
    await repository.mark_paid(session, invoice.id)
    return None


HANDLERS: dict[str, Callable[[AsyncSession, dict[str, Any], datetime], Awaitable[Outcome]]] = {
    "payment_intent.succeeded": _payment_succeeded,
}
