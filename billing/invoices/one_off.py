"""One-off charges: a fee outside the plan (a setup fee, an onboarding day, a hardware unit),
invoiced at once on its own ``one_off`` invoice or left pending for the customer's next invoice.

- The amount is ``quantity × unit_price`` exactly, rounded once to the minor unit like any line.
  Unit prices are not negative: a credit is a credit grant or a balance adjustment, which say so
  in the ledger, not a charge below zero.
- The idempotency key is the charge's own unique key: the same key with the same request returns
  the first charge (and its invoice) and writes nothing; with another request it is refused.
- A ``NOW`` charge is posted like any invoice (receivable against ``one_off_revenue``), draws the
  customer's credits, and is collected like any invoice. It needs no subscription.
- A ``NEXT_INVOICE`` charge is claimed by the customer's next invoice (opening or period) in that
  invoice's transaction, from ``pending`` only; issuing locks the charges it bills, so a cancel
  waits for it and then finds the charge invoiced. Exactly one invoice ever bills a charge.
  A subscription canceled immediately bills its pending charges on its final invoice; once
  canceled, it has no next invoice, and such a charge is refused (charge ``NOW``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import charges_repository
from billing.invoices.errors import NotPending
from billing.invoices.invoicing import DraftInvoice, issue, one_off_line
from billing.invoices.repository import invoice_by_id
from billing.models import Invoice, OneOffCharge
from customers import service as customers
from customers.errors import CustomerNotFound, NoSubscription, SubscriptionCanceled
from customers.lifecycle import CANCELED, subscription_status
from customers.models import Subscription
from ledger import audit
from ledger.errors import CurrencyMismatch, IdempotencyKeyReused, InvalidInput, NotFound
from ledger.grants import drawable_credits
from ledger.money import (
    MAX_MINOR_UNITS,
    MAX_PRICE_PLACES,
    normalize_currency,
    places_needed,
    plain_decimal,
    round_to_minor,
    to_major,
)

TIMINGS = ("now", "next_invoice")
MAX_DESCRIPTION_LENGTH = 500
MAX_REASON_LENGTH = 1000
MAX_KEY_LENGTH = 255
#: The largest quantity of one charge, and its decimal places: more is a typo, not a sale.
MAX_QUANTITY = Decimal(10) ** 9
MAX_QUANTITY_PLACES = 12


@dataclass(frozen=True)
class OneOffChargeRequest:
    customer_id: uuid.UUID
    description: str
    quantity: Decimal
    unit_price: Decimal
    currency: str
    timing: str
    idempotency_key: str
    actor: str
    # Which subscription's next invoice bills it (NEXT_INVOICE); required when the customer has several.
    subscription_id: uuid.UUID | None = None


@dataclass(frozen=True)
class OneOffOutcome:
    """The charge; for ``now``, its invoice (None for a dry run) and the credits that apply."""

    charge: OneOffCharge
    invoice: Invoice | None
    credits_applied: int | None
    amount_due: int | None


def check_text(value: str, *, field: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInput("is required", field=field)
    if len(text) > limit:
        raise InvalidInput(f"must be at most {limit} characters", field=field)
    return text


def check_key(idempotency_key: str) -> str:
    return check_text(idempotency_key, field="idempotencyKey", limit=MAX_KEY_LENGTH)


def _priced(request: OneOffChargeRequest, currency: str) -> tuple[Decimal, Decimal, Decimal, int]:
    """Quantity, unit price, exact amount and rounded amount, each bounded before any arithmetic."""
    quantity, unit_price = request.quantity, request.unit_price
    if not quantity.is_finite() or quantity <= 0:
        raise InvalidInput("must be greater than zero", field="quantity")
    if quantity > MAX_QUANTITY or places_needed(quantity) > MAX_QUANTITY_PLACES:
        raise InvalidInput(
            f"must be at most {MAX_QUANTITY:,} with at most {MAX_QUANTITY_PLACES} decimal places", field="quantity"
        )
    if not unit_price.is_finite() or unit_price < 0:
        raise InvalidInput(
            "must not be negative: credit a customer with grantCredits or adjustBalance", field="unitPrice"
        )
    if places_needed(unit_price) > MAX_PRICE_PLACES:
        raise InvalidInput(f"must have at most {MAX_PRICE_PLACES} decimal places", field="unitPrice")
    largest = to_major(MAX_MINOR_UNITS, currency)
    if unit_price > largest:
        raise InvalidInput(f"must be at most {largest}", field="unitPrice")
    with localcontext(prec=80):  # exact: both are bounded, and 80 digits hold any product of them
        amount_exact = quantity * unit_price
    if amount_exact > largest:
        raise InvalidInput(
            f"quantity × unit price is more than Tally holds in one amount ({largest})", field="unitPrice"
        )
    amount = round_to_minor(amount_exact, currency)
    if amount <= 0:
        raise InvalidInput(f"quantity × unit price rounds to nothing in {currency}", field="unitPrice")
    return plain_decimal(quantity), plain_decimal(unit_price), amount_exact, amount


def _request_hash(request: OneOffChargeRequest, quantity: Decimal, unit_price: Decimal, description: str) -> str:
    document = {
        "customer": str(request.customer_id),
        "description": description,
        "quantity": str(quantity),
        "unit_price": str(unit_price),
        "currency": request.currency.strip().upper(),
        "timing": request.timing,
    }
    if request.subscription_id is not None:
        document["subscription"] = str(request.subscription_id)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def create_one_off_charge(
    session: AsyncSession,
    request: OneOffChargeRequest,
    *,
    as_of: datetime,
    dry_run: bool = False,
    trace_id: str | None = None,
) -> OneOffOutcome:
    """Charge the customer once; ``dry_run`` works out the same amounts and writes nothing."""
    customer = await customers.get_customer(session, customer_id=request.customer_id)
    if customer is None:
        raise CustomerNotFound()
    description = check_text(request.description, field="description", limit=MAX_DESCRIPTION_LENGTH)
    currency = normalize_currency(request.currency)
    if currency != customer.currency:
        raise CurrencyMismatch(f"the customer is billed in {customer.currency}, not {currency}", field="currency")
    if request.timing not in TIMINGS:
        raise InvalidInput("must be NOW or NEXT_INVOICE", field="when")
    key = check_key(request.idempotency_key) if not dry_run or request.idempotency_key else ""
    quantity, unit_price, amount_exact, amount = _priced(request, currency)
    subscription_id = None
    if request.timing == "next_invoice":
        subscription_id = (await _check_next_invoice(session, request, customer.id, as_of=as_of)).id
    elif request.subscription_id is not None:
        raise InvalidInput(
            "a charge invoiced now is billed on its own invoice: name no subscription", field="subscriptionId"
        )
    charge = OneOffCharge(
        customer_id=customer.id,
        subscription_id=subscription_id,
        description=description,
        quantity=quantity,
        unit_price=unit_price,
        amount_exact=amount_exact,
        amount=amount,
        currency=currency,
        timing=request.timing,
        status="pending",
        actor=request.actor,
        idempotency_key=key,
        request_hash=_request_hash(request, quantity, unit_price, description),
        created_at=as_of,
    )
    if dry_run:
        if request.timing == "next_invoice":
            return OneOffOutcome(charge, None, None, None)
        available = await drawable_credits(session, customer_id=customer.id, currency=currency, as_of=as_of)
        credits = min(amount, available)
        return OneOffOutcome(charge, None, credits, amount - credits)
    stored = await charges_repository.insert_one_off_charge(session, charge)
    if stored.request_hash != charge.request_hash:
        raise IdempotencyKeyReused()
    if stored.id != charge.id:  # a retry: the first call's outcome
        return await outcome_of(session, stored)
    await audit.record(
        session,
        actor=stored.actor,
        action="charge.create",
        subject_type="OneOffCharge",
        subject_id=stored.id,
        customer_id=stored.customer_id,
        as_of=as_of,
        after={
            "description": stored.description,
            "quantity": stored.quantity,
            "unit_price": stored.unit_price,
            "amount": to_major(stored.amount, stored.currency),
            "currency": stored.currency,
            "timing": stored.timing,
        },
    )
    if request.timing == "next_invoice":
        return OneOffOutcome(stored, None, None, None)
    draft = DraftInvoice(
        customer.id,
        currency,
        "one_off",
        as_of,
        as_of,
        [one_off_line(stored)],
        one_off_charge_ids=(stored.id,),
        reference=f"one-off:{stored.id}",
        label=f"one-off charge: {description}",
    )
    invoice = await issue(session, draft, as_of=as_of, invoiced_through=None, trace_id=trace_id)
    claimed = await charges_repository.one_off_charge(session, stored.id)  # now invoiced
    assert claimed is not None
    return OneOffOutcome(claimed, invoice, invoice.credits_applied, invoice.amount_due)


async def _check_next_invoice(
    session: AsyncSession, request: OneOffChargeRequest, customer_id: uuid.UUID, *, as_of: datetime
) -> Subscription:
    """A charge left for the next invoice needs a subscription that will issue one (returned). A canceled
    subscription issues none after its final invoice (a cancel at the period's end still issues
    it, and the charge goes on it). Outside a dry run the subscription is locked until the charge
    commits: an invoice being issued (the billing run, an immediate cancel's final invoice) holds
    the same lock, so the charge is either seen and claimed by it, or made after it with the
    subscription's state as that invoice left it; never left pending with no invoice to come. A
    dry run takes the lock too, released by its rollback."""
    subscription = await customers.lock_subscription(session, customer_id, request.subscription_id)
    if subscription is None:
        raise NoSubscription(
            "the customer has no subscription, so no next invoice: charge NOW instead",
            field="when",
        )
    if subscription_status(subscription, as_of) == CANCELED:
        assert subscription.cancel_at is not None
        raise SubscriptionCanceled(
            f"the subscription was canceled at {subscription.cancel_at.isoformat()}, so no next invoice: "
            "charge NOW instead",
            field="when",
        )
    return subscription


async def outcome_of(session: AsyncSession, charge: OneOffCharge) -> OneOffOutcome:
    if charge.timing == "now" and charge.invoice_id is not None:
        invoice = await invoice_by_id(session, charge.invoice_id)
        assert invoice is not None
        return OneOffOutcome(charge, invoice, invoice.credits_applied, invoice.amount_due)
    return OneOffOutcome(charge, None, None, None)


async def cancel_one_off_charge(
    session: AsyncSession,
    *,
    charge_id: uuid.UUID,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    customer_id: uuid.UUID | None = None,
) -> OneOffCharge:
    """Cancel a pending charge before an invoice bills it. The row lock waits for an invoice
    claiming it right now; a charge already invoiced is refused (credit the customer instead).
    The same key returns the canceled charge again; ``customer_id`` scopes the lookup."""
    key = check_key(idempotency_key)
    reason = check_text(reason, field="reason", limit=MAX_REASON_LENGTH)
    earlier = await charges_repository.one_off_charge_by_cancel_key(session, key)
    if earlier is not None:
        if earlier.id != charge_id:
            raise IdempotencyKeyReused()
        return earlier
    charge = await charges_repository.one_off_charge(session, charge_id, lock=True)
    if charge is None or (customer_id is not None and charge.customer_id != customer_id):
        raise NotFound("no such one-off charge", field="chargeId")
    if charge.status == "canceled" and charge.cancel_key == key:  # a concurrent retry went first
        return charge
    if charge.status != "pending":
        raise NotPending(
            f"the charge is {charge.status}: only a pending charge can be canceled"
            + ("; credit the customer instead" if charge.status == "invoiced" else ""),
            field="chargeId",
        )
    charge.status = "canceled"
    charge.canceled_at, charge.canceled_by = as_of, actor
    charge.cancel_reason, charge.cancel_key = reason, key
    session.add(charge)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="charge.cancel",
        subject_type="OneOffCharge",
        subject_id=charge.id,
        customer_id=charge.customer_id,
        as_of=as_of,
        before={"status": "pending"},
        after={"status": "canceled", "reason": reason},
    )
    return charge


async def one_off_charges(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    statuses: list[str] | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> list[OneOffCharge]:
    return await charges_repository.one_off_charges_page(
        session, customer_id, statuses=statuses, after=after, limit=limit
    )
