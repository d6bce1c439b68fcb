"""The refund outbox: ``REFUND`` credit notes paid back to the card through Stripe.

A worker claims a row (SKIP LOCKED) and commits the claim before calling Stripe, keyed
``credit_note:<id>:refund``; a row left in flight by a crash is claimed again after its lease, and
the worker first looks among the payment's refunds for one made for the note, so a crash between
Stripe's answer and Tally's commit never refunds twice. A refund made is posted by
:func:`billing.collection.outcomes.post_refunds` up to the charge's running total refunded, exactly as the
``charge.refunded`` webhook posts it: whichever comes first posts, the other finds nothing new.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection import repository as collection_repository
from billing.collection.outcomes import post_refunds
from billing.collection.stripe_gateway import (
    RefundRefused,
    StripeGateway,
    StripeUnavailable,
    refund_already_made,
    refund_payment,
)
from billing.invoices import credit_notes_repository as notes_repository
from billing.models import RefundOutbox

LEASE = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=6)


async def claim_next_refund(session: AsyncSession, *, as_of: datetime) -> tuple[RefundOutbox, bool] | None:
    """The next refund to send, leased to this worker; the caller commits before calling Stripe."""
    return await notes_repository.claim_refund(session, as_of=as_of, lease_until=as_of + LEASE)


async def send_refund(
    session: AsyncSession, gateway: StripeGateway, claimed: tuple[RefundOutbox, bool], *, as_of: datetime
) -> str:
    """Refund a claimed credit note and post it; the caller commits. Its outcome: refunded,
    failed (Stripe refused) or retry (Stripe unreachable: the same refund later, with backoff)."""
    row, reclaimed = claimed
    try:
        made = None
        if reclaimed:
            made = await refund_already_made(
                gateway, payment_intent_id=row.payment_intent_id, credit_note_id=row.credit_note_id
            )
        if made is None:
            made = await refund_payment(
                gateway, payment_intent_id=row.payment_intent_id, amount=row.amount, credit_note_id=row.credit_note_id
            )
    except StripeUnavailable as error:
        backoff = min(timedelta(minutes=2**row.attempts), MAX_BACKOFF)
        await notes_repository.retry_refund(session, row.credit_note_id, at=as_of + backoff, error=str(error))
        return "retry"
    except RefundRefused as error:
        await notes_repository.settle_refund(
            session, row.credit_note_id, status="failed", refund_id=None, error=str(error)
        )
        await notes_repository.set_status(session, row.credit_note_id, "refund_failed")
        return "failed"
    payment = await collection_repository.payment_for_update(
        session, payment_intent_id=row.payment_intent_id, charge_id=made.charge_id
    )
    assert payment is not None, row.payment_intent_id
    not_posted = await post_refunds(
        session,
        payment,
        charge_id=made.charge_id,
        amount_refunded=made.charge_amount_refunded,
        currency=made.currency,
        refunded_at=as_of,
        as_of=as_of,
    )
    await notes_repository.settle_refund(
        session, row.credit_note_id, status="refunded", refund_id=made.refund_id, error=not_posted
    )
    await notes_repository.set_status(session, row.credit_note_id, "refunded")
    return "refunded"
