"""Commitments: a prepaid commitment drawn down like credits, and a subscription's own minimum
spend per period (the true-up itself is :mod:`billing.invoices.minimum_spend`).

A prepaid commitment is invoiced at once, in full (a ``commitment`` invoice, collected like any
other), and granted as credits of the same amount (source ``commitment``, funded by the customer's
receivable, so the ledger holds it as what Tally owes the customer until usage draws it). The
credits count from ``starts_at`` and expire at ``ends_at``: what is left then goes to breakage
through the ledger's own expiry job. The credits are drawable before the invoice is paid: the
customer has committed to pay it, whatever happens (a paid top-up, by contrast, grants credits
only once its payment succeeds, and has no term).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import charges_repository, repository
from billing.invoices.invoicing import DEFAULT_PAYMENT_TERMS
from billing.invoices.minimum_spend import setting_at
from billing.invoices.one_off import MAX_REASON_LENGTH, check_key, check_text
from billing.models import Invoice, MinimumSpend, PrepaidCommitment
from customers import service as customers
from customers.billing_details import billing_details_of
from customers.credits import grant_credits
from customers.errors import CustomerNotFound, NoSubscription, SubscriptionCanceled
from customers.lifecycle import CANCELED, subscription_status
from customers.models import Customer
from customers.subscriptions import phases_of, version_on
from ledger import repository as ledger_repository
from ledger.errors import CurrencyMismatch, IdempotencyKeyReused, InvalidInput
from ledger.models import CreditGrant
from ledger.money import normalize_currency, plain_decimal, to_major, to_minor_exact
from pricing.service import plan_version

#: The longest term of a prepaid commitment, and how far ahead a minimum may be scheduled.
MAX_TERM = timedelta(days=3660)
DEFAULT_PRIORITY = 100


async def _customer_in(session: AsyncSession, customer_id: uuid.UUID, currency: str | None) -> Customer:
    customer = await customers.get_customer(session, customer_id=customer_id)
    if customer is None:
        raise CustomerNotFound()
    if currency is not None and normalize_currency(currency) != customer.currency:
        raise CurrencyMismatch(
            f"the customer is billed in {customer.currency}, not {currency.strip().upper()}",
            field="currency",
        )
    return customer


def _moment(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field=field)
    return value


def _hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class CommitmentRequest:
    customer_id: uuid.UUID
    amount: Decimal
    currency: str
    ends_at: datetime
    idempotency_key: str
    actor: str
    starts_at: datetime | None = None
    priority: int | None = None


@dataclass(frozen=True)
class CommitmentOutcome:
    commitment: PrepaidCommitment
    grant: CreditGrant | None  # None for a dry run
    invoice: Invoice | None  # None for a dry run


async def create_prepaid_commitment(
    session: AsyncSession,
    request: CommitmentRequest,
    *,
    as_of: datetime,
    backdate_limit: timedelta,
    dry_run: bool = False,
    trace_id: str | None = None,
) -> CommitmentOutcome:
    """Invoice the commitment and grant its credits; ``dry_run`` checks it and writes nothing.
    The same key with the same request returns the first commitment."""
    customer = await _customer_in(session, request.customer_id, request.currency)
    currency = customer.currency
    amount = to_minor_exact(request.amount, currency)
    if amount <= 0:
        raise InvalidInput("must be greater than zero", field="amount")
    starts_at = _moment(request.starts_at or as_of, "startsAt")
    ends_at = _moment(request.ends_at, "endsAt")
    if starts_at < as_of - backdate_limit:
        raise InvalidInput(
            f"must be at most {backdate_limit.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="startsAt"
        )
    if ends_at <= max(starts_at, as_of):
        raise InvalidInput("must be after startsAt and in the future", field="endsAt")
    if ends_at - starts_at > MAX_TERM:
        raise InvalidInput(f"the term may be at most {MAX_TERM.days} days", field="endsAt")
    priority = DEFAULT_PRIORITY if request.priority is None else request.priority
    if not 0 <= priority <= 1_000_000:
        raise InvalidInput("must be between 0 and 1000000", field="priority")
    key = check_key(request.idempotency_key) if not dry_run or request.idempotency_key else ""
    commitment = PrepaidCommitment(
        customer_id=customer.id,
        amount=amount,
        currency=currency,
        starts_at=starts_at,
        ends_at=ends_at,
        priority=priority,
        actor=request.actor,
        idempotency_key=key,
        request_hash=_hash(
            {
                "customer": str(customer.id),
                "amount": amount,
                "currency": currency,
                "starts_at": starts_at.isoformat() if request.starts_at else None,
                "ends_at": ends_at.isoformat(),
                "priority": priority,
            }
        ),
        created_at=as_of,
    )
    if dry_run:
        return CommitmentOutcome(commitment, None, None)
    stored, created = await charges_repository.insert_commitment(session, commitment)
    if stored.request_hash != commitment.request_hash:
        raise IdempotencyKeyReused()
    if not created:
        return await commitment_outcome(session, stored)
    period = f"{starts_at:%Y-%m-%d} to {ends_at:%Y-%m-%d}"
    grant = await grant_credits(
        session,
        customer_id=customer.id,
        currency=currency,
        amount=amount,
        reason=f"prepaid commitment, {period}",
        actor=request.actor,
        idempotency_key=f"commitment:{stored.id}:credits",
        as_of=as_of,
        priority=priority,
        expires_at=ends_at,
        effective_at=starts_at,
        source="commitment",
        trace_id=trace_id,
    )
    invoice = await _write_commitment_invoice(
        session, stored, grant, period, buyer=customer, as_of=as_of, trace_id=trace_id
    )
    await charges_repository.link_commitment(session, stored.id, grant_id=grant.id, invoice_id=invoice.id)
    stored.grant_id, stored.invoice_id = grant.id, invoice.id
    return CommitmentOutcome(stored, grant, invoice)


async def _write_commitment_invoice(
    session: AsyncSession,
    commitment: PrepaidCommitment,
    grant: CreditGrant,
    period: str,
    *,
    buyer: Customer,
    as_of: datetime,
    trace_id: str | None,
) -> Invoice:
    """The commitment's invoice: one line for the whole amount, no credits applied (credits do
    not pay for credits), its ledger transaction the grant's (receivable against credits); the
    buyer's billing details kept on it as on every invoice."""
    major = to_major(commitment.amount, commitment.currency)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "customer_id": commitment.customer_id,
        "subscription_id": None,
        "kind": "commitment",
        "status": "issued",
        "currency": commitment.currency,
        "period_start": commitment.starts_at,
        "period_end": commitment.ends_at,
        "subtotal": commitment.amount,
        "credits_applied": 0,
        "total": commitment.amount,
        "amount_due": commitment.amount,
        # A prepayment is not taxed: the invoices of the usage it pays for carry the tax.
        "tax_amount": 0,
        "issued_at": as_of,
        "ledger_transaction_id": grant.transaction_id,
        "credits_transaction_id": None,
        "trace_id": trace_id,
        "billing_details": billing_details_of(buyer).as_json(),
        "due_at": as_of + DEFAULT_PAYMENT_TERMS,
    }
    line = {
        "position": 0,
        "kind": "commitment",
        "description": f"Prepaid commitment, {period}",
        "plan_version_id": None,
        "plan_charge_id": None,
        "meter_id": None,
        "dimensions": {},
        "quantity": Decimal(1),
        "unit_price": plain_decimal(major),
        "amount_exact": major,
        "amount": commitment.amount,
        "service_start": commitment.starts_at,
        "service_end": commitment.ends_at,
    }
    number = await repository.write_invoice(session, repository.InvoiceToWrite(row, [line], [], None))
    return Invoice(number=number, **row)


async def commitment_outcome(session: AsyncSession, commitment: PrepaidCommitment) -> CommitmentOutcome:
    grant = await ledger_repository.grant(session, commitment.grant_id) if commitment.grant_id else None
    invoice = await repository.invoice_by_id(session, commitment.invoice_id) if commitment.invoice_id else None
    return CommitmentOutcome(commitment, grant, invoice)


async def prepaid_commitments(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None = None, limit: int
) -> list[tuple[PrepaidCommitment, CreditGrant | None]]:
    return await charges_repository.commitments_page(session, customer_id, after=after, limit=limit)


@dataclass(frozen=True)
class MinimumSpendRequest:
    customer_id: uuid.UUID
    amount: Decimal | None  # None: back to the plan's minimum
    reason: str
    idempotency_key: str
    actor: str
    effective_at: datetime | None = None
    subscription_id: uuid.UUID | None = None  # required when the customer has several


async def set_minimum_spend(session: AsyncSession, request: MinimumSpendRequest, *, as_of: datetime) -> MinimumSpend:
    """Give the subscription its own minimum spend per period from ``effective_at`` (default
    now) on, audited (who, when, why) and versioned: earlier settings stay as they were. A
    moment inside a period already invoiced is refused: issued invoices never change; so is a
    canceled subscription, or a moment from its (scheduled) end on, when no period is left."""
    customer = await _customer_in(session, request.customer_id, None)
    subscription = await customers.lock_subscription(session, customer.id, request.subscription_id)
    if subscription is None:
        raise NoSubscription(
            "the customer has no subscription: a minimum spend is per billing period",
            field="customerId",
        )
    if subscription_status(subscription, as_of) == CANCELED:
        assert subscription.cancel_at is not None
        raise SubscriptionCanceled(
            f"the subscription was canceled at {subscription.cancel_at.isoformat()}: it has no periods left",
            field="customerId",
        )
    amount = request.amount
    if amount is not None:
        if amount < 0:
            raise InvalidInput("must not be negative", field="amount")
        amount = plain_decimal(to_major(to_minor_exact(amount, customer.currency), customer.currency))
    effective_at = _moment(request.effective_at or as_of, "effectiveAt")
    invoiced_through = subscription.invoiced_through
    if invoiced_through is not None and effective_at < invoiced_through:
        raise InvalidInput(
            f"must not be before {invoiced_through.isoformat()}: the periods before are invoiced", field="effectiveAt"
        )
    if subscription.cancel_at is not None and effective_at >= subscription.cancel_at:
        raise InvalidInput(
            f"must be before {subscription.cancel_at.isoformat()}, when the subscription ends", field="effectiveAt"
        )
    if effective_at > as_of + MAX_TERM:
        raise InvalidInput(f"must be at most {MAX_TERM.days} days ahead", field="effectiveAt")
    reason = check_text(request.reason, field="reason", limit=MAX_REASON_LENGTH)
    setting = MinimumSpend(
        customer_id=customer.id,
        subscription_id=subscription.id,
        amount=amount,
        currency=customer.currency,
        effective_at=effective_at,
        reason=reason,
        actor=request.actor,
        idempotency_key=check_key(request.idempotency_key),
        request_hash=_hash(
            {
                "customer": str(customer.id),
                "amount": str(amount) if amount is not None else None,
                "effective_at": request.effective_at.isoformat() if request.effective_at else None,
                "reason": reason,
            }
            | ({"subscription": str(request.subscription_id)} if request.subscription_id else {})
        ),
        created_at=as_of,
    )
    stored = await charges_repository.insert_minimum_spend(session, setting)
    if stored.request_hash != setting.request_hash:
        raise IdempotencyKeyReused()
    return stored


@dataclass(frozen=True)
class MinimumSpendNow:
    """The minimum spend per period in effect at a moment, where it comes from, and the
    subscription's own settings (oldest first)."""

    amount: Decimal | None
    source: str  # "subscription", "plan" or "none"
    settings: list[MinimumSpend]


async def minimum_spend_now(
    session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime, subscription_id: uuid.UUID | None = None
) -> MinimumSpendNow:
    """Of the subscription named, by default of the customer's primary one."""
    if subscription_id is None:
        subscription = (await customers.subscriptions_of(session, [customer_id])).get(customer_id)
        if subscription is None:
            return MinimumSpendNow(None, "none", [])
        subscription_id = subscription.id
    settings = await charges_repository.minimum_spends_of(session, customer_id, subscription_id)
    phases = await phases_of(session, subscription_id)
    if not phases:
        return MinimumSpendNow(None, "none", settings)
    own = setting_at(settings, as_of)
    if own is not None and own.amount is not None:
        return MinimumSpendNow(own.amount, "subscription", settings)
    plan_minimum = (await plan_version(session, version_on(phases, as_of))).minimum_spend
    return MinimumSpendNow(plan_minimum, "plan" if plan_minimum is not None else "none", settings)
