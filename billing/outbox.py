"""The collection outbox: invoices with an amount due, collected by off-session PaymentIntents.

A worker claims a row (SKIP LOCKED) and commits the attempt number before calling Stripe, with
the key ``invoice:<id>:attempt:<n>``; a claim is a lease: a row left in flight by a crash is
claimed again after the lease, with the same attempt number and so the same key, and Stripe
answers with the PaymentIntent it already made rather than charging twice. No ledger lock is held
during the call. A declined card starts dunning (retries on a schedule, the customer PAST_DUE, then SUSPENDED);
Stripe unreachable puts the row back with exponential backoff.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import repository
from billing.collection import stripe_customer_id
from billing.stripe_gateway import Charge, StripeGateway, StripeUnavailable, charge_off_session, saved_card
from billing.webhooks import post_invoice_payment
from customers import service as customers

LEASE = timedelta(minutes=10)
# Retries after a declined payment, counted from the first failure (TALLY_DUNNING_RETRY_DAYS).
DUNNING_SCHEDULE = (timedelta(days=3), timedelta(days=5), timedelta(days=7))
MAX_BACKOFF = timedelta(hours=6)


@dataclass(frozen=True)
class Claimed:
    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    attempt: int
    amount: int
    currency: str


async def claim_next(session: AsyncSession, *, as_of: datetime) -> Claimed | None:
    """The next invoice to collect, leased to this worker; the caller commits before calling Stripe."""
    row = (
        await session.execute(
            text(
                "SELECT o.invoice_id, o.customer_id, o.attempts, o.status, i.amount_due, i.currency "
                "FROM collection_outbox o JOIN invoices i ON i.id = o.invoice_id "
                "WHERE o.status IN ('pending', 'in_flight') AND o.next_attempt_at <= :as_of "
                "ORDER BY o.next_attempt_at LIMIT 1 FOR UPDATE OF o SKIP LOCKED"
            ),
            {"as_of": as_of},
        )
    ).first()
    if row is None:
        return None
    invoice_id, customer_id, attempts, status, amount, currency = row
    attempt = attempts if status == "in_flight" else attempts + 1  # a lease run out: the same key
    await session.execute(
        text(
            "UPDATE collection_outbox SET status = 'in_flight', attempts = :attempt, next_attempt_at = :lease "
            "WHERE invoice_id = :invoice_id"
        ),
        {"attempt": attempt, "lease": as_of + LEASE, "invoice_id": invoice_id},
    )
    return Claimed(invoice_id, customer_id, attempt, amount, currency)


async def charge(session: AsyncSession, gateway: StripeGateway, claimed: Claimed, *, as_of: datetime) -> Charge:
    """Ask Stripe to charge the claimed invoice (the caller has committed the claim)."""
    stripe_id = await stripe_customer_id(session, gateway, claimed.customer_id, as_of=as_of)
    await session.commit()
    card = await saved_card(gateway, stripe_id)
    if card is None:
        return Charge("failed", None, "the customer has no saved card")
    return await charge_off_session(
        gateway,
        stripe_customer_id=stripe_id,
        payment_method=card,
        amount=claimed.amount,
        currency=claimed.currency,
        invoice_id=claimed.invoice_id,
        idempotency_key=f"invoice:{claimed.invoice_id}:attempt:{claimed.attempt}",
    )


async def record(
    session: AsyncSession,
    claimed: Claimed,
    charged: Charge,
    *,
    as_of: datetime,
    retry_after: tuple[timedelta, ...] = DUNNING_SCHEDULE,
) -> None:
    """Keep the attempt and act on its outcome. A success posts the payment (keyed by the
    PaymentIntent) and, with nothing else overdue, makes the customer ACTIVE again. A failure
    makes them PAST_DUE and schedules the next retry, ``retry_after`` the first failure; when the
    last retry fails too, they are SUSPENDED (entitlements answer no)."""
    await repository.record_attempt(session, claimed.invoice_id, claimed.attempt, charged, as_of=as_of)
    if charged.status == "succeeded" and charged.payment_intent_id:
        error = await post_invoice_payment(
            session,
            claimed.invoice_id,
            payment_intent_id=charged.payment_intent_id,
            amount=claimed.amount,
            currency=claimed.currency,
            paid_at=as_of,
            as_of=as_of,
        )
        await repository.settle_outbox(session, claimed.invoice_id, "collected" if error is None else "failed", error)
        if error is None and not await repository.customers_with_failed_collection(session, claimed.customer_id):
            await customers.set_status(session, claimed.customer_id, "ACTIVE")
        return
    if charged.status in ("requires_action", "processing"):
        await repository.settle_outbox(session, claimed.invoice_id, "collected", f"payment {charged.status}")
        return
    failures = await repository.failed_attempts(session, claimed.invoice_id)
    first_failed_at = await repository.first_failure(session, claimed.invoice_id) or as_of
    if failures <= len(retry_after):
        await repository.schedule_retry_after_failure(
            session,
            claimed.invoice_id,
            failed_at=first_failed_at,
            retry_at=first_failed_at + retry_after[failures - 1],
            error=charged.error,
        )
        await customers.set_status(session, claimed.customer_id, "PAST_DUE")
    else:
        await repository.settle_outbox(session, claimed.invoice_id, "failed", charged.error)
        await customers.set_status(session, claimed.customer_id, "SUSPENDED")


async def retry_later(session: AsyncSession, claimed: Claimed, error: StripeUnavailable, *, as_of: datetime) -> None:
    delay = min(timedelta(minutes=2**claimed.attempt), MAX_BACKOFF)
    await repository.retry_outbox(session, claimed.invoice_id, as_of + delay, str(error))
