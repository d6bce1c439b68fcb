"""Stripe webhooks: the intake verifies the signature and its timestamp, stores the event once by
its id and answers at once; processing acts on stored events apart from the request (a job), each
effect keyed by Stripe's object id, so a duplicate delivery has no second effect, and reading the
object's current state from Stripe where the order of events matters.

One event never blocks the others. Each is acted on inside a savepoint: when its handler refuses
it (an unknown currency, an amount beyond BIGINT, a payment that does not match its invoice) or
raises anything unexpected, what it did is rolled back and the event is parked ``failed`` with
its error and its attempt count, and the queue moves on. A refusal would be refused again, so it
waits for someone to retry it by hand (:func:`retry_by_hand`); an unexpected error is tried again
with exponential backoff, up to a number of attempts, then waits for a hand too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection import repository as collection_repository
from billing.collection import stripe_event_repository
from billing.collection.errors import SignatureInvalid
from billing.collection.outcomes import (
    Attempt,
    Paid,
    post_dispute,
    post_payout,
    post_refunds,
    record_outcome,
    settle_payment,
)
from billing.collection.stripe_gateway import StripeGateway, charge_of_intent, current_intent, default_payment_method
from billing.invoices import credit_notes_repository, repository
from billing.invoices.failures import Backoff, failure_summary
from billing.tracing import linked_to, tracer
from ledger.errors import InvalidInput, NotFound, TallyError
from ledger.money import MAX_MINOR_UNITS, normalize_currency

SIGNATURE_TOLERANCE_SECONDS = 300
DEFAULT_BACKOFF = Backoff(first=timedelta(minutes=5), longest=timedelta(hours=24))


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


async def receive(
    session: AsyncSession, event: dict[str, Any], *, as_of: datetime, trace_id: str | None = None
) -> ReceivedEvent:
    """Store a verified event once by its id (a redelivery only counts as one more delivery)."""
    status = "received" if event["type"] in HANDLERS else "ignored"
    created = event.get("created")
    stored_status, deliveries = await stripe_event_repository.store_stripe_event(
        session,
        event,
        object_id=_object_id(event),
        created=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else as_of,
        received_at=as_of,
        status=status,
        trace_id=trace_id,
    )
    return ReceivedEvent(event["id"], event["type"], duplicate=deliveries > 1, status=stored_status)


@dataclass(frozen=True)
class Outcome:
    status: str  # processed, ignored or failed
    error: str | None = None


@dataclass(frozen=True)
class Processing:
    """What handlers need beyond the event: Stripe, to read an object's current state where the
    order of events matters (None when collection is off: the payload is then all there is), and
    the dunning schedule (TALLY_DUNNING_RETRY_DAYS); and how an event whose processing raised is
    retried (TALLY_STRIPE_EVENT_RETRY_MINUTES, TALLY_STRIPE_EVENT_MAX_ATTEMPTS)."""

    gateway: StripeGateway | None
    retry_after: tuple[timedelta, ...]
    backoff: Backoff = DEFAULT_BACKOFF
    max_attempts: int = 8


@dataclass(frozen=True)
class ProcessedEvent:
    id: str
    type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None  # when a failed event is tried again; None: only by hand


Handler = Callable[[AsyncSession, dict[str, Any], Processing, datetime], Awaitable[Outcome]]


async def process_next(session: AsyncSession, processing: Processing, *, as_of: datetime) -> ProcessedEvent | None:
    """Act on the oldest stored event a handler exists for, or a failed one due for its retry
    (SKIP LOCKED: workers share the queue); None when none waits. Whatever the handler raises
    is rolled back to a savepoint and parks the event ``failed``: it never stops the queue. The
    caller commits."""
    due = await stripe_event_repository.next_due_stripe_event_for_update(session, types=sorted(HANDLERS), as_of=as_of)
    if due is None:
        return None
    event_id, event_type, payload, delivery_trace, attempts = due
    attempts += 1
    retry_at: datetime | None = None
    attributes: dict[str, str | int] = {
        "stripe.event_id": event_id,
        "stripe.event_type": event_type,
        "stripe.attempt": attempts,
    }
    with tracer.start_as_current_span(
        "stripe.event", attributes=attributes, links=linked_to(delivery_trace, "webhook delivery")
    ) as span:
        savepoint = await session.begin_nested()
        try:
            obj = payload["data"]["object"]
            span.set_attribute("stripe.object_id", str(obj.get("id", "")))
            outcome = await HANDLERS[event_type](session, obj, processing, as_of)
        except TallyError as error:  # refused: the same event would be refused again
            await savepoint.rollback()
            outcome = Outcome("failed", error.message)
        except Exception as error:  # anything else may pass another time: retried with backoff
            await savepoint.rollback()
            span.record_exception(error)
            outcome = Outcome("failed", failure_summary(error))
            if attempts < processing.max_attempts:
                retry_at = as_of + processing.backoff.delay(attempts)
        else:  # a handler's own "failed" keeps what it recorded about the failure (the outbox's status)
            await savepoint.commit()
        span.set_attribute("tally.outcome", outcome.status)
    await stripe_event_repository.record_stripe_event_outcome(
        session,
        event_id,
        status=outcome.status,
        error=outcome.error,
        processed_at=as_of,
        attempts=attempts,
        next_attempt_at=retry_at,
    )
    return ProcessedEvent(str(event_id), event_type, outcome.status, attempts, retry_at)


async def retry_by_hand(session: AsyncSession, event_id: str) -> None:
    """Queue a failed event again, now (someone fixed what made it fail); the caller commits."""
    if not await stripe_event_repository.requeue_failed_stripe_event(session, event_id, types=sorted(HANDLERS)):
        raise NotFound("no failed Stripe event with this id", field="eventId")


def _minor_units(obj: dict[str, Any], key: str) -> int:
    """An amount Stripe sends in minor units: an integer the ledger can hold (BIGINT), else refused
    before anything is posted. Missing is 0."""
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{key} {value!r} is not an integer amount of minor units", field=key)
    if abs(value) > MAX_MINOR_UNITS:
        raise InvalidInput(f"{key} {value} is beyond what the ledger holds (2^63-1 minor units)", field=key)
    return value


def _currency(obj: dict[str, Any]) -> str:
    """The object's ISO 4217 currency, upper case; one Tally does not know is refused before anything is posted."""
    return normalize_currency(str(obj.get("currency") or ""))


def _timestamp(value: Any, default: datetime) -> datetime:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else default


def _id_of(value: Any) -> str | None:
    """An id Stripe sends either bare or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


async def _attempt_of(session: AsyncSession, intent: dict[str, Any]) -> Attempt | Outcome:
    """The Tally attempt a PaymentIntent was made for, from its metadata."""
    metadata = intent.get("metadata") or {}
    invoice_ref, attempt_ref = metadata.get("tally_invoice_id"), metadata.get("tally_attempt")
    if not invoice_ref:
        return Outcome("ignored", "not the payment of a Tally invoice (no tally_invoice_id in its metadata)")
    try:
        invoice_id = uuid.UUID(invoice_ref)
    except ValueError:
        return Outcome("failed", f"no invoice {invoice_ref}")
    invoice = await repository.invoice_by_id(session, invoice_id)
    if invoice is None:
        return Outcome("failed", f"no invoice {invoice_ref}")
    number = int(attempt_ref) if isinstance(attempt_ref, str) and attempt_ref.isdigit() else 0
    due = await credit_notes_repository.still_due(session, invoice.id)  # less what credit notes took off
    return Attempt(invoice.id, invoice.customer_id, number, due, invoice.currency)


async def _payment_intent_changed(
    session: AsyncSession, intent: dict[str, Any], processing: Processing, as_of: datetime
) -> Outcome:
    """``succeeded``, ``payment_failed`` and ``requires_action`` alike: the PaymentIntent's state
    now (fetched from Stripe when it can be, since events arrive in any order) is the attempt's
    outcome, acted on once. A PaymentIntent made outside the outbox (no attempt number) can only
    pay: it is posted by its own id."""
    attempt = await _attempt_of(session, intent)
    if isinstance(attempt, Outcome):
        return attempt
    if processing.gateway is not None:
        charged = await current_intent(processing.gateway, intent["id"])
    else:
        charged = charge_of_intent(stripe.PaymentIntent.construct_from(intent, None))
    if attempt.number == 0:
        if charged.status != "succeeded":
            return Outcome("ignored", f"a payment made outside Tally's collection is {charged.status}")
        paid = Paid(
            payment_intent_id=intent["id"],
            charge_id=charged.charge_id,
            amount=_minor_units(intent, "amount_received") or _minor_units(intent, "amount"),
            currency=_currency(intent),
            paid_at=_timestamp(intent.get("created"), as_of),
        )
        error = await settle_payment(session, attempt.invoice_id, paid, as_of=as_of)
        return Outcome("failed", error) if error else Outcome("processed")
    amount, currency = _minor_units(intent, "amount"), _currency(intent)
    if (amount, currency) != (attempt.amount, attempt.currency):
        return Outcome("failed", f"paid {amount} {currency} for an invoice due {attempt.amount} {attempt.currency}")
    acted = await record_outcome(session, attempt, charged, as_of=as_of, retry_after=processing.retry_after)
    return Outcome("processed" if acted else "ignored", None if acted else f"attempt already {charged.status}")


NOT_OURS = Outcome("ignored", "not the payment of a Tally invoice")


async def _charge_refunded(
    session: AsyncSession, charge: dict[str, Any], processing: Processing, as_of: datetime
) -> Outcome:
    payment = await collection_repository.payment_for_update(
        session, payment_intent_id=_id_of(charge.get("payment_intent")), charge_id=charge["id"]
    )
    if payment is None:
        return NOT_OURS
    error = await post_refunds(
        session,
        payment,
        charge_id=charge["id"],
        amount_refunded=_minor_units(charge, "amount_refunded"),
        currency=_currency(charge),
        refunded_at=as_of,
        as_of=as_of,
    )
    return Outcome("failed", error) if error else Outcome("processed")


async def _dispute_created(
    session: AsyncSession, dispute: dict[str, Any], processing: Processing, as_of: datetime
) -> Outcome:
    charge_id = _id_of(dispute.get("charge"))
    if charge_id is None:
        return NOT_OURS
    payment = await collection_repository.payment_for_update(
        session, payment_intent_id=_id_of(dispute.get("payment_intent")), charge_id=charge_id
    )
    if payment is None:
        return NOT_OURS
    error = await post_dispute(
        session,
        payment,
        dispute_id=dispute["id"],
        charge_id=charge_id,
        amount=_minor_units(dispute, "amount"),
        currency=_currency(dispute),
        reason=dispute.get("reason"),
        status=str(dispute.get("status") or "needs_response"),
        opened_at=_timestamp(dispute.get("created"), as_of),
        as_of=as_of,
    )
    return Outcome("failed", error) if error else Outcome("processed")


async def _default_payment_method_changed(
    session: AsyncSession, obj: dict[str, Any], processing: Processing, as_of: datetime
) -> Outcome:
    """``customer.updated`` and ``payment_method.attached``: keep the customer's default card as
    Stripe has it now (read back when possible: an older event may arrive after a newer one)."""
    stripe_customer = obj["id"] if obj.get("object") == "customer" else _id_of(obj.get("customer"))
    if stripe_customer is None or not await collection_repository.is_stripe_customer(session, stripe_customer):
        return Outcome("ignored", "not the Stripe customer of a Tally customer")
    if processing.gateway is not None:
        default = await default_payment_method(processing.gateway, stripe_customer)
    elif obj.get("object") == "customer":
        default = _id_of((obj.get("invoice_settings") or {}).get("default_payment_method"))
    else:
        return Outcome("ignored", "without Stripe to ask, an attached card says nothing of the default")
    await collection_repository.set_default_payment_method(session, stripe_customer, default)
    return Outcome("processed")


async def _payout(session: AsyncSession, payout: dict[str, Any], processing: Processing, as_of: datetime) -> Outcome:
    """``payout.paid`` and ``payout.failed``: the account's money leaving Stripe for the bank. The
    payload decides (a failed payout is final), so no order of the two events needs Stripe's state."""
    status = str(payout.get("status") or "")
    amount = _minor_units(payout, "amount")
    if status not in ("paid", "failed") or amount <= 0:
        return Outcome("ignored", f"a payout of {amount} that is {status or 'of no status'}")
    await post_payout(
        session,
        payout_id=payout["id"],
        amount=amount,
        currency=_currency(payout),
        failed=status == "failed",
        at=_timestamp(payout.get("arrival_date"), as_of),
        as_of=as_of,
    )
    return Outcome("processed")


HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": _payment_intent_changed,
    "payment_intent.payment_failed": _payment_intent_changed,
    "payment_intent.requires_action": _payment_intent_changed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "customer.updated": _default_payment_method_changed,
    "payment_method.attached": _default_payment_method_changed,
    "payout.paid": _payout,
    "payout.failed": _payout,
}
