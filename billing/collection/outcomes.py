"""What Stripe's answers do to Tally: a payment attempt's outcome (from the collection worker or a
webhook, whichever comes first, acted on once), payments, refunds and disputes posted to the
ledger once each, keyed by Stripe's object ids.

The ledger moves: a payment debits Stripe clearing and credits the customer's receivable; a refund
debits ``refunds`` (revenue given back) and credits clearing; a dispute debits ``disputes`` and
credits clearing (Stripe withdraws the disputed amount at once); a payout debits ``bank`` and
credits clearing (what Stripe held reaches the bank: clearing comes back to zero), and a payout
that fails after all is reversed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import emails
from billing.collection import repository as collection_repository
from billing.collection.dunning import dun
from billing.collection.stripe_gateway import Charge
from billing.credits import balance as credit_balance
from billing.credits import topups
from billing.findings import Finding, raise_anomaly
from billing.invoices import collection_state, credit_notes_repository, repository
from billing.invoices.events import mark_paid
from billing.models import Invoice, StripePayment
from customers import service as customers
from ledger.models import LedgerTransaction
from ledger.service import Entry, Leg, account, claim, post


@dataclass(frozen=True)
class Paid:
    """A payment as Stripe reports it."""

    payment_intent_id: str
    charge_id: str | None
    amount: int
    currency: str
    paid_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One try at collecting an invoice, as the outbox numbered it (key ``invoice:<id>:attempt:<n>``)."""

    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    number: int
    amount: int
    currency: str


async def record_outcome(
    session: AsyncSession,
    attempt: Attempt,
    charged: Charge,
    *,
    as_of: datetime,
    retry_after: tuple[timedelta, ...],
) -> bool:
    """Keep an attempt's outcome and act on it, once: the worker that made the call and the
    webhook that reports it may both get here, in either order; the second finds the outcome known
    and does nothing (False). An outcome never goes back: a stale ``requires_action`` does not
    undo a success. A success posts the payment and, with nothing else overdue, makes the
    customer ACTIVE; a failure of an unpaid invoice makes them PAST_DUE and schedules the next
    retry ``retry_after`` the first failure; when the last retry fails too, they are SUSPENDED.
    Either way the customer is emailed (a receipt, or the failure and what happens next) and the
    product told (``invoice.paid``, or ``invoice.payment_failed`` once per attempt)."""
    if not await collection_repository.record_attempt(
        session, attempt.invoice_id, attempt.number, charged, as_of=as_of
    ):
        return False
    if charged.status == "succeeded" and charged.payment_intent_id:
        paid = Paid(charged.payment_intent_id, charged.charge_id, attempt.amount, attempt.currency, paid_at=as_of)
        await settle_payment(session, attempt.invoice_id, paid, as_of=as_of)
        return True
    if charged.status in ("requires_action", "processing"):
        status = "action_required" if charged.status == "requires_action" else "processing"
        why = "the customer must authenticate the payment" if status == "action_required" else "Stripe is processing"
        await collection_state.settle_outbox(session, attempt.invoice_id, status, why)
        return True
    invoice = await repository.invoice_for_update(session, attempt.invoice_id)
    if invoice is None or invoice.status != "issued":
        return True  # a late failure of an invoice since paid, voided or written off: history only
    if invoice.kind == "credit_purchase":  # nothing was owed: the top-up fails, no dunning
        await topups.payment_failed(session, invoice, error=charged.error, as_of=as_of)
        return True
    await dun(session, invoice, attempt.number, error=charged.error, as_of=as_of, retry_after=retry_after)
    return True


async def settle_payment(
    session: AsyncSession,
    invoice_id: uuid.UUID,
    paid: Paid,
    *,
    as_of: datetime,
) -> str | None:
    """Post the payment, close the invoice's collection, queue the receipt and, with nothing else
    overdue, make the customer ACTIVE; a top-up's invoice grants its credits (once, whichever of
    the worker and the webhook reports the payment first). Returns why it could not be posted, or None."""
    invoice = await repository.invoice_for_update(session, invoice_id)
    error = await _post_payment(session, invoice, paid, as_of=as_of) if invoice else f"no invoice {invoice_id}"
    await collection_state.settle_outbox(session, invoice_id, "collected" if error is None else "failed", error)
    if invoice is None or error is not None:
        return error
    if invoice.kind == "credit_purchase":
        await topups.credits_paid(session, invoice, as_of=as_of)
        await credit_balance.check_balance(session, invoice.customer_id, as_of=as_of)
    if not await collection_state.customers_with_failed_collection(session, invoice.customer_id):
        await customers.set_status(session, invoice.customer_id, "ACTIVE")
    await emails.payment_receipt(session, invoice, paid.amount, paid_at=paid.paid_at)
    return None


async def post_invoice_payment(
    session: AsyncSession,
    invoice_id: uuid.UUID,
    paid: Paid,
    *,
    as_of: datetime,
) -> str | None:
    """Post a payment (Stripe clearing debited, the receivable credited), remember it for
    reconciliation, and mark the invoice paid; the ledger key is the PaymentIntent's id, so the
    worker and the webhook can both report it and it is posted once. Returns why it could not
    be posted, or None."""
    invoice = await repository.invoice_for_update(session, invoice_id)
    return await _post_payment(session, invoice, paid, as_of=as_of) if invoice else f"no invoice {invoice_id}"


async def _post_payment(session: AsyncSession, invoice: Invoice, paid: Paid, *, as_of: datetime) -> str | None:
    """The amount paid must be what is still due: the amount due less what credit notes took off it."""
    due = await credit_notes_repository.still_due(session, invoice.id)
    if paid.currency != invoice.currency or paid.amount != due:
        return f"paid {paid.amount} {paid.currency} for invoice {invoice.number}, which is due {due} {invoice.currency}"
    entry = Entry(
        kind="payment",
        currency=paid.currency,
        customer_id=invoice.customer_id,
        effective_at=paid.paid_at,
        actor="stripe",
        reason=f"payment {paid.payment_intent_id} of invoice {invoice.number}",
        idempotency_key=f"stripe:payment:{paid.payment_intent_id}",
        request={"invoice": str(invoice.id), "amount": paid.amount},
    )
    transaction, created = await claim(session, entry, as_of=as_of)
    if created:
        clearing = await account(session, "stripe_clearing", paid.currency, as_of)
        receivable = await account(session, "receivable", paid.currency, as_of, invoice.customer_id)
        await post(session, transaction, [Leg(clearing, paid.amount), Leg(receivable, -paid.amount)])
    await collection_repository.remember_payment(
        session,
        payment_intent_id=paid.payment_intent_id,
        invoice=invoice,
        charge_id=paid.charge_id,
        amount=paid.amount,
        paid_at=paid.paid_at,
        ledger_transaction_id=transaction.id,
    )
    await mark_paid(session, invoice, as_of=as_of)
    return None


async def _through_clearing(
    session: AsyncSession, entry: Entry, account_kind: str, amount: int, *, as_of: datetime
) -> tuple[LedgerTransaction, bool]:
    """Claim ``entry`` and, the first time only, move ``amount`` out of Stripe clearing into
    ``account_kind`` (a negative amount moves it back): refunds, disputes and payouts all do."""
    transaction, created = await claim(session, entry, as_of=as_of)
    if created:
        other = await account(session, account_kind, entry.currency, as_of)
        clearing = await account(session, "stripe_clearing", entry.currency, as_of)
        await post(session, transaction, [Leg(other, amount), Leg(clearing, -amount)])
    return transaction, created


async def post_refunds(
    session: AsyncSession,
    payment: StripePayment,
    *,
    charge_id: str,
    amount_refunded: int,
    currency: str,
    refunded_at: datetime,
    as_of: datetime,
) -> str | None:
    """Bring what Tally has posted as refunded on ``payment`` (locked by the caller) up to the
    charge's ``amount_refunded`` (Stripe's running total): a refund event seen twice, or an older
    one seen after a newer, posts nothing. Returns why nothing could be posted, or None."""
    if currency != payment.currency:
        return f"refunded in {currency}, paid in {payment.currency}"
    newly_refunded = amount_refunded - payment.refunded
    if newly_refunded <= 0:
        return None
    entry = Entry(
        kind="refund",
        currency=currency,
        customer_id=payment.customer_id,
        effective_at=refunded_at,
        actor="stripe",
        reason=f"refund of {newly_refunded} on charge {charge_id} (payment {payment.payment_intent_id})",
        idempotency_key=f"stripe:refund:{charge_id}:{amount_refunded}",
        request={"charge": charge_id, "amount_refunded": amount_refunded},
    )
    await _through_clearing(session, entry, "refunds", newly_refunded, as_of=as_of)
    await collection_repository.set_refunded(session, payment.payment_intent_id, amount_refunded)
    return None


async def post_dispute(
    session: AsyncSession,
    payment: StripePayment,
    *,
    dispute_id: str,
    charge_id: str,
    amount: int,
    currency: str,
    reason: str | None,
    status: str,
    opened_at: datetime,
    as_of: datetime,
) -> str | None:
    """Post a dispute of ``payment`` (locked by the caller) once, clearing credited (Stripe has
    taken the amount back), and raise a ``DISPUTE`` anomaly for finance. Returns why nothing could
    be posted, or None."""
    if currency != payment.currency:
        return f"disputed in {currency}, paid in {payment.currency}"
    entry = Entry(
        kind="dispute",
        currency=currency,
        customer_id=payment.customer_id,
        effective_at=opened_at,
        actor="stripe",
        reason=f"dispute {dispute_id} ({reason or 'no reason given'}) on payment {payment.payment_intent_id}",
        idempotency_key=f"stripe:dispute:{dispute_id}",
        request={"charge": charge_id, "amount": amount},
    )
    transaction, created = await _through_clearing(session, entry, "disputes", amount, as_of=as_of)
    if not created:
        return None
    await collection_repository.remember_dispute(
        session,
        dispute_id=dispute_id,
        payment_intent_id=payment.payment_intent_id,
        amount=amount,
        currency=currency,
        reason=reason,
        status=status,
        opened_at=opened_at,
        ledger_transaction_id=transaction.id,
    )
    invoice = await repository.invoice_for_update(session, payment.invoice_id)
    number = invoice.number if invoice is not None else "?"
    await raise_anomaly(
        session,
        Finding(
            kind="DISPUTE",
            customer_id=payment.customer_id,
            window_start=opened_at,
            window_end=opened_at,
            severity="high",
            summary=f"dispute {dispute_id} for {amount} {currency} on invoice {number} ({reason or 'no reason'})",
            numbers={
                "dispute": dispute_id,
                "payment_intent": payment.payment_intent_id,
                "charge": charge_id,
                "amount": amount,
                "currency": currency,
                "invoice_number": number,
            },
        ),
        as_of=as_of,
    )
    return None


async def post_payout(
    session: AsyncSession, *, payout_id: str, amount: int, currency: str, failed: bool, at: datetime, as_of: datetime
) -> None:
    """Post a payout once (clearing → bank); one that failed is posted and reversed, whichever of
    ``payout.paid`` and ``payout.failed`` came first, so both orders end at the same balances."""
    paid = Entry(
        kind="payout",
        currency=currency,
        customer_id=None,
        effective_at=at,
        actor="stripe",
        reason=f"payout {payout_id} to the bank",
        idempotency_key=f"stripe:payout:{payout_id}",
        request={"payout": payout_id, "amount": amount},
    )
    await _through_clearing(session, paid, "bank", amount, as_of=as_of)
    if not failed:
        return
    returned = Entry(
        kind="payout_failed",
        currency=currency,
        customer_id=None,
        effective_at=at,
        actor="stripe",
        reason=f"payout {payout_id} failed: the amount is back with Stripe",
        idempotency_key=f"stripe:payout_failed:{payout_id}",
        request={"payout": payout_id, "amount": amount},
    )
    await _through_clearing(session, returned, "bank", -amount, as_of=as_of)
