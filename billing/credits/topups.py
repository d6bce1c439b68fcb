"""Paid top-ups: a customer buys credits. The purchase is billed at once on its own
``credit_purchase`` invoice and collected like any invoice (the collection outbox, a Stripe
PaymentIntent); its credits are granted only when that invoice is paid, with the purchase's own
priority and validity (``expires_in_days`` counted from the payment, since nobody knows when
that comes).

- Exactly once: the worker that charged the card and Stripe's webhook both end in
  :func:`billing.collection.outcomes.settle_payment`, which calls :func:`credits_paid`; the grant's ledger key
  is the purchase's (``credit-purchase:<id>:credits``), so whichever reports first grants and the
  other finds it granted.
- The ledger: the invoice posts nothing when issued (nobody owes a top-up before paying it: an
  abandoned one is no debt). The payment credits the receivable, and the grant (source
  ``purchase``, funded by the receivable) debits it back: Stripe clearing against the customer's
  credits, nothing left owed.
- No credits pay for credits and no tax is charged on the invoice: credits are a prepayment, and
  the invoices they pay carry the tax (as for prepaid commitments).
- A failed payment grants nothing: the purchase is ``failed``, its invoice voided, and no dunning
  follows (the customer owes nothing). A voided or uncollectible invoice fails its purchase too.
- Without Stripe (no ``STRIPE_API_KEY``) the invoice is issued and waits, uncollected, like any
  invoice: the purchase stays awaiting payment until staff void its invoice (it fails).
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

from billing.credits import repository as topup_repository
from billing.credits.errors import RechargeInFlight
from billing.invoices import collection_state, repository
from billing.invoices.invoicing import DEFAULT_PAYMENT_TERMS
from billing.invoices.one_off import check_key
from billing.models import CreditPurchase, Invoice
from customers import service as customers
from customers.billing_details import billing_details_of
from customers.credits import grant_credits
from customers.errors import CustomerNotFound
from customers.models import Customer
from ledger.errors import CurrencyMismatch, IdempotencyKeyReused, InvalidInput
from ledger.money import normalize_currency, plain_decimal, to_major, to_minor_exact

#: Stripe's largest charge (99,999,999 minor units): a larger top-up could never be collected.
MAX_PURCHASE = 99_999_999
#: The longest validity of purchased credits, in days (ten years).
MAX_VALIDITY_DAYS = 3660
DEFAULT_PRIORITY = 100
MAX_PRIORITY = 1_000_000


@dataclass(frozen=True)
class PurchaseRequest:
    customer_id: uuid.UUID
    amount: Decimal  # major units, as the caller wrote it
    currency: str
    idempotency_key: str
    actor: str
    priority: int | None = None
    expires_in_days: int | None = None


@dataclass(frozen=True)
class PurchaseOutcome:
    purchase: CreditPurchase
    invoice: Invoice | None  # None for a dry run


def check_amount(amount: Decimal, currency: str, *, field: str = "amount") -> int:
    """Minor units of a top-up amount: greater than zero, payable (no fraction of the minor unit)
    and at most what one Stripe charge can take."""
    if not amount.is_finite():
        raise InvalidInput("must be a finite amount", field=field)
    minor = to_minor_exact(amount, currency, field=field)
    if minor <= 0:
        raise InvalidInput("must be greater than zero", field=field)
    if minor > MAX_PURCHASE:
        raise InvalidInput(
            f"must be at most {to_major(MAX_PURCHASE, currency)} {currency} (the largest charge Stripe takes)",
            field=field,
        )
    return minor


def check_priority(priority: int | None, *, field: str = "priority") -> int:
    value = DEFAULT_PRIORITY if priority is None else priority
    if not 0 <= value <= MAX_PRIORITY:
        raise InvalidInput(f"must be between 0 and {MAX_PRIORITY}", field=field)
    return value


def check_validity(days: int | None, *, field: str = "expiresInDays") -> int | None:
    if days is not None and not 1 <= days <= MAX_VALIDITY_DAYS:
        raise InvalidInput(f"must be between 1 and {MAX_VALIDITY_DAYS} days (or null: never)", field=field)
    return days


async def customer_in(session: AsyncSession, customer_id: uuid.UUID, currency: str) -> Customer:
    """The customer, when ``currency`` is theirs (credits are held in the customer's currency)."""
    customer = await customers.get_customer(session, customer_id=customer_id)
    if customer is None:
        raise CustomerNotFound()
    code = normalize_currency(currency)
    if code != customer.currency:
        raise CurrencyMismatch(f"the customer is billed in {customer.currency}, not {code}", field="currency")
    return customer


def _hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def purchase_credits(
    session: AsyncSession,
    request: PurchaseRequest,
    *,
    as_of: datetime,
    dry_run: bool = False,
    origin: str = "request",
    trace_id: str | None = None,
) -> PurchaseOutcome:
    """Bill a purchase of credits on its own invoice, queued for collection; the credits come when
    it is paid. The same key with the same request returns the first purchase and writes nothing;
    with another request it is refused. ``dry_run`` checks it all and writes nothing."""
    customer = await customer_in(session, request.customer_id, request.currency)
    currency = customer.currency
    amount = check_amount(request.amount, currency)
    priority = check_priority(request.priority)
    expires_in_days = check_validity(request.expires_in_days)
    key = check_key(request.idempotency_key) if not dry_run or request.idempotency_key else ""
    purchase = CreditPurchase(
        customer_id=customer.id,
        amount=amount,
        currency=currency,
        priority=priority,
        expires_in_days=expires_in_days,
        origin=origin,
        status="awaiting_payment",
        actor=request.actor,
        idempotency_key=key,
        request_hash=_hash(
            {
                "customer": str(customer.id),
                "amount": amount,
                "currency": currency,
                "priority": priority,
                "expires_in_days": expires_in_days,
                "origin": origin,
            }
        ),
        created_at=as_of,
    )
    if dry_run:
        return PurchaseOutcome(purchase, None)
    stored, created = await topup_repository.insert_purchase(session, purchase)
    if stored is None:  # an auto-recharge while another awaits payment (the partial unique index)
        raise RechargeInFlight("an auto-recharge already awaits payment", field="customerId")
    if stored.request_hash != purchase.request_hash:
        raise IdempotencyKeyReused()
    if not created:
        invoice = await repository.invoice_by_id(session, stored.invoice_id) if stored.invoice_id else None
        return PurchaseOutcome(stored, invoice)
    invoice = await _write_purchase_invoice(session, stored, buyer=customer, as_of=as_of, trace_id=trace_id)
    await topup_repository.link_invoice(session, stored.id, invoice.id)
    stored.invoice_id = invoice.id
    return PurchaseOutcome(stored, invoice)


def describe(purchase: CreditPurchase) -> str:
    validity = f", valid {purchase.expires_in_days} days" if purchase.expires_in_days else ""
    what = "Auto-recharge" if purchase.origin == "auto_recharge" else "Credits"
    return f"{what}: {to_major(purchase.amount, purchase.currency)} {purchase.currency} of credits{validity}"


async def _write_purchase_invoice(
    session: AsyncSession, purchase: CreditPurchase, *, buyer: Customer, as_of: datetime, trace_id: str | None
) -> Invoice:
    """One ``credit_purchase`` line for the whole amount; no credits applied, no tax, no ledger
    transaction (see the module); queued for collection by :func:`repository.write_invoice`."""
    major = to_major(purchase.amount, purchase.currency)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "customer_id": purchase.customer_id,
        "subscription_id": None,
        "kind": "credit_purchase",
        "status": "issued",
        "currency": purchase.currency,
        "period_start": as_of,
        "period_end": as_of,
        "subtotal": purchase.amount,
        "credits_applied": 0,
        "total": purchase.amount,
        "amount_due": purchase.amount,
        "tax_amount": 0,
        "issued_at": as_of,
        "ledger_transaction_id": None,
        "credits_transaction_id": None,
        "trace_id": trace_id,
        "billing_details": billing_details_of(buyer).as_json(),
        "due_at": as_of + DEFAULT_PAYMENT_TERMS,
    }
    line = {
        "position": 0,
        "kind": "credit_purchase",
        "description": describe(purchase),
        "plan_version_id": None,
        "plan_charge_id": None,
        "meter_id": None,
        "dimensions": {},
        "quantity": Decimal(1),
        "unit_price": plain_decimal(major),
        "amount_exact": major,
        "amount": purchase.amount,
        "service_start": as_of,
        "service_end": as_of,
    }
    number = await repository.write_invoice(session, repository.InvoiceToWrite(row, [line], [], None))
    return Invoice(number=number, **row)


async def credits_paid(session: AsyncSession, invoice: Invoice, *, as_of: datetime) -> None:
    """Grant the credits of the purchase ``invoice`` bills (its payment just posted, in this
    transaction), once: a second report of the payment finds the grant keyed and the purchase
    paid. The credits count from now, when Tally learns of the payment; their validity too."""
    purchase = await topup_repository.purchase_of_invoice(session, invoice.id, lock=True)
    if purchase is None or purchase.grant_id is not None:
        return
    grant = await grant_credits(
        session,
        customer_id=purchase.customer_id,
        currency=purchase.currency,
        amount=purchase.amount,
        reason=f"credits bought on invoice {invoice.number}",
        actor="billing",
        idempotency_key=f"credit-purchase:{purchase.id}:credits",
        as_of=as_of,
        priority=purchase.priority,
        expires_at=as_of + timedelta(days=purchase.expires_in_days) if purchase.expires_in_days else None,
        source="purchase",
    )
    await topup_repository.settle(session, purchase.id, status="paid", grant_id=grant.id, failure=None, at=as_of)


async def payment_failed(session: AsyncSession, invoice: Invoice, *, error: str | None, as_of: datetime) -> None:
    """A top-up's payment failed: nothing is granted, the purchase fails and its invoice is voided
    (nothing was owed; no retries, no dunning): the customer buys again, or the next balance check
    recharges again."""
    await collection_state.settle_outbox(session, invoice.id, "failed", error)
    await repository.set_invoice_status(session, invoice.id, "void")
    await invoice_closed(session, invoice.id, why=error or "the payment failed", as_of=as_of)


async def invoice_closed(session: AsyncSession, invoice_id: uuid.UUID, *, why: str, as_of: datetime) -> None:
    """The purchase of an invoice closed unpaid (voided, written off, its payment failed) fails;
    the credits it would have granted never come."""
    purchase = await topup_repository.purchase_of_invoice(session, invoice_id, lock=True)
    if purchase is not None and purchase.status == "awaiting_payment":
        await topup_repository.settle(session, purchase.id, status="failed", grant_id=None, failure=why, at=as_of)


async def purchases(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    origin: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> list[CreditPurchase]:
    return await topup_repository.purchases_page(session, customer_id, origin=origin, after=after, limit=limit)
