"""The collection outbox: invoices with an amount due, collected by off-session PaymentIntents.

A worker claims a row (SKIP LOCKED) and commits the attempt number before calling Stripe, with
the key ``invoice:<id>:attempt:<n>``, then commits the payer (:func:`payer_of`: a Stripe customer
made for a customer who had none is kept even if the charge is never answered); the worker
commits, nothing here does. A claim is a lease: a row left in flight by a crash is claimed again
after the lease with the same attempt number, and the worker first looks for the charge that
attempt may already have made before asking Stripe again, so a crash between Stripe's answer and
Tally's commit never charges twice. No ledger lock is held during the call. What the answer does
(payment, dunning) is :func:`billing.collection.outcomes.record_outcome`, shared with the webhooks. Stripe
unreachable (or a call timed out) retries the same attempt, the same way, with exponential backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection import repository as collection_repository
from billing.collection.customers import stripe_customer_id
from billing.collection.outcomes import Attempt, record_outcome
from billing.collection.stripe_gateway import (
    Charge,
    StripeGateway,
    StripeUnavailable,
    attempt_already_made,
    charge_off_session,
    saved_card,
)
from billing.tracing import linked_to, tracer

LEASE = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=6)


@dataclass(frozen=True)
class Claimed:
    attempt: Attempt
    reclaimed: bool  # the lease of an earlier claim of this attempt ran out: it may have reached Stripe
    invoice_trace_id: str | None  # the trace that issued the invoice


async def claim_next(session: AsyncSession, *, as_of: datetime) -> Claimed | None:
    """The next invoice to collect, leased to this worker; the caller commits before calling Stripe."""
    due = await collection_repository.next_due_collection_for_update(session, as_of=as_of)
    if due is None:
        return None
    reclaimed = due.status == "in_flight"
    number = due.attempts if reclaimed else due.attempts + 1
    await collection_repository.lease_collection(session, due.invoice_id, attempt=number, lease_until=as_of + LEASE)
    attempt = Attempt(due.invoice_id, due.customer_id, number, due.still_due, due.currency)
    return Claimed(attempt, reclaimed, due.invoice_trace_id)


async def payer_of(session: AsyncSession, gateway: StripeGateway, claimed: Claimed, *, as_of: datetime) -> str | None:
    """The Stripe customer to charge for the claimed invoice, made (and saved in the caller's
    transaction, which the caller commits before the charge, so that a crash keeps it) when the
    customer has none yet; None when Stripe is unreachable: the attempt is retried later."""
    try:
        return await stripe_customer_id(session, gateway, claimed.attempt.customer_id, as_of=as_of)
    except StripeUnavailable as error:
        await retry_later(session, claimed, error, as_of=as_of)
        return None


async def charge(gateway: StripeGateway, claimed: Claimed, stripe_customer: str) -> Charge:
    """Ask Stripe to charge the claimed invoice (the caller has committed the claim and the payer)."""
    attempt = claimed.attempt
    if claimed.reclaimed:
        made = await attempt_already_made(
            gateway, stripe_customer_id=stripe_customer, invoice_id=attempt.invoice_id, attempt=attempt.number
        )
        if made is not None:
            return made
    card = await saved_card(gateway, stripe_customer)
    if card is None:
        return Charge("failed", None, "the customer has no saved card")
    return await charge_off_session(
        gateway,
        stripe_customer_id=stripe_customer,
        payment_method=card,
        amount=attempt.amount,
        currency=attempt.currency,
        invoice_id=attempt.invoice_id,
        attempt=attempt.number,
    )


async def collect(
    session: AsyncSession,
    gateway: StripeGateway,
    claimed: Claimed,
    stripe_customer: str,
    *,
    as_of: datetime,
    retry_after: tuple[timedelta, ...],
) -> None:
    """Charge a claimed invoice (its payer from :func:`payer_of`) and act on the answer, in a span
    linked to the invoice's issuance; Stripe's HTTP calls are spans under it. The caller commits."""
    attempt = claimed.attempt
    attributes: dict[str, str | int] = {
        "tally.invoice_id": str(attempt.invoice_id),
        "tally.customer_id": str(attempt.customer_id),
        "tally.attempt": attempt.number,
        "tally.amount_minor": attempt.amount,
        "tally.currency": attempt.currency,
    }
    links = linked_to(claimed.invoice_trace_id, "invoice issuance")
    with tracer.start_as_current_span("collection.attempt", attributes=attributes, links=links) as span:
        try:
            charged = await charge(gateway, claimed, stripe_customer)
        except StripeUnavailable as error:
            span.set_attribute("tally.outcome", "stripe unavailable")
            await retry_later(session, claimed, error, as_of=as_of)
            return
        span.set_attribute("tally.outcome", charged.status)
        await record_outcome(session, attempt, charged, as_of=as_of, retry_after=retry_after)


async def retry_later(session: AsyncSession, claimed: Claimed, error: StripeUnavailable, *, as_of: datetime) -> None:
    await collection_repository.retry_outbox(
        session, claimed.attempt.invoice_id, as_of=as_of, backoff=_backoff, error=str(error)
    )


def _backoff(retries: int) -> timedelta:
    """2, 4, 8… minutes, at most :data:`MAX_BACKOFF`."""
    return min(timedelta(minutes=2**retries), MAX_BACKOFF)
