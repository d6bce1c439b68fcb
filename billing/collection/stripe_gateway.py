"""The Stripe gateway: the official SDK's `StripeClient`, its API base configurable (localstripe in
tests), timeouts, network retries, and an idempotency key on every write, derived from Tally's ids,
so a retried call never creates a second object. Callers never hold a ledger lock across a call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import stripe
from stripe.params import ChargeListParams, CustomerCreateParams, PaymentIntentCreateParams, SetupIntentCreateParams

T = TypeVar("T")


@dataclass(frozen=True)
class StripeConfig:
    api_key: str
    api_base: str | None = None  # e.g. http://localhost:8420 for localstripe
    timeout_seconds: float = 10.0
    max_network_retries: int = 2


@dataclass(frozen=True)
class SetupIntent:
    id: str
    client_secret: str


class StripeGateway:
    def __init__(self, config: StripeConfig):
        self.client = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base} if config.api_base else None,
            max_network_retries=config.max_network_retries,
            http_client=stripe.HTTPXClient(timeout=config.timeout_seconds),
        )

    async def create_customer(self, *, tally_customer_id: uuid.UUID, name: str, email: str | None) -> str:
        """The Stripe customer of a Tally customer; the key makes a repeated call return the same one."""
        params: CustomerCreateParams = {"name": name, "metadata": {"tally_customer_id": str(tally_customer_id)}}
        if email:
            params["email"] = email
        customer = await self.client.v1.customers.create_async(
            params=params, options={"idempotency_key": f"customer:{tally_customer_id}"}
        )
        return customer.id

    async def create_setup_intent(self, *, stripe_customer_id: str, idempotency_key: str) -> SetupIntent:
        """A SetupIntent for the frontend to save a card for off-session invoice payments."""
        params: SetupIntentCreateParams = {"customer": stripe_customer_id, "usage": "off_session"}
        intent = await self.client.v1.setup_intents.create_async(
            params=params, options={"idempotency_key": idempotency_key}
        )
        assert intent.client_secret is not None
        return SetupIntent(intent.id, intent.client_secret)


class StripeUnavailable(Exception):
    """Stripe could not be reached or failed on its side: try again later."""


@dataclass(frozen=True)
class Charge:
    """What Stripe answered about one attempt: its PaymentIntent and, once it has one, its charge."""

    status: str  # succeeded, requires_action, processing, failed
    payment_intent_id: str | None
    error: str | None = None
    charge_id: str | None = None


def _latest_charge_id(intent: stripe.PaymentIntent) -> str | None:
    latest = intent.latest_charge
    return latest if isinstance(latest, str) or latest is None else latest.id


def _tally_metadata(intent: stripe.PaymentIntent) -> dict[str, str]:
    """The Tally invoice (``tally_invoice_id``) and attempt (``tally_attempt``) a PaymentIntent is for."""
    return intent.metadata.to_dict() if intent.metadata else {}


def charge_of_intent(intent: stripe.PaymentIntent) -> Charge:
    status = intent.status if intent.status in ("succeeded", "requires_action", "processing") else "failed"
    charge_id = _latest_charge_id(intent)
    error = None
    if status == "failed":
        last_error = intent.last_payment_error
        error = (last_error.message if last_error is not None else None) or f"payment intent {intent.status}"
    return Charge(status, intent.id, error, charge_id)


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise StripeUnavailable(str(error.user_message or error)) from error
    except stripe.APIError as error:
        raise StripeUnavailable(str(error.user_message or error)) from error


async def default_payment_method(gateway: StripeGateway, stripe_customer_id: str) -> str | None:
    """The customer's default payment method for invoices, as Stripe has it now."""
    customer = await _call(gateway.client.v1.customers.retrieve_async(stripe_customer_id))
    default = customer.invoice_settings.default_payment_method if customer.invoice_settings else None
    return default if isinstance(default, str) or default is None else default.id


async def saved_card(gateway: StripeGateway, stripe_customer_id: str) -> str | None:
    """The card to charge: the customer's default for invoices, else their only card (with several
    and no default, which one the customer meant is not ours to guess)."""
    default = await default_payment_method(gateway, stripe_customer_id)
    if default:
        return default
    cards = await _call(
        gateway.client.v1.payment_methods.list_async(params={"customer": stripe_customer_id, "type": "card"})
    )
    return cards.data[0].id if len(cards.data) == 1 else None


async def charge_off_session(
    gateway: StripeGateway,
    *,
    stripe_customer_id: str,
    payment_method: str,
    amount: int,
    currency: str,
    invoice_id: uuid.UUID,
    attempt: int,
) -> Charge:
    """Create and confirm an off-session PaymentIntent for an invoice, keyed
    ``invoice:<id>:attempt:<n>``; a declined card is an answer (``failed``), Stripe being
    unreachable is :class:`StripeUnavailable`."""
    params: PaymentIntentCreateParams = {
        "amount": amount,
        "currency": currency.lower(),
        "customer": stripe_customer_id,
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        "metadata": {"tally_invoice_id": str(invoice_id), "tally_attempt": str(attempt)},
    }
    key = f"invoice:{invoice_id}:attempt:{attempt}"
    try:
        intent = await _call(
            gateway.client.v1.payment_intents.create_async(params=params, options={"idempotency_key": key})
        )
    except stripe.CardError as error:
        declined = getattr(error.error, "payment_intent", None)
        charge_id = getattr(error.error, "charge", None)
        return Charge(
            "failed", declined.id if declined is not None else None, error.user_message or "card declined", charge_id
        )
    return charge_of_intent(intent)


async def attempt_already_made(
    gateway: StripeGateway, *, stripe_customer_id: str, invoice_id: uuid.UUID, attempt: int
) -> Charge | None:
    """What became of an attempt whose outcome Tally never recorded (a crash between Stripe's
    answer and the commit): the charge it made, found among the customer's charges by the
    PaymentIntent's metadata. Idempotency keys alone would cover this for 24 hours on Stripe;
    this also covers a longer outage and stand-ins that ignore keys. An attempt that never made a
    charge (it waits for authentication) is not found, and a new attempt moves no money twice."""
    async for _, intent in _charges_with_intents(gateway, {"customer": stripe_customer_id}):
        metadata = _tally_metadata(intent)
        if metadata.get("tally_invoice_id") == str(invoice_id) and metadata.get("tally_attempt") == str(attempt):
            return charge_of_intent(intent)
    return None


async def _charges_with_intents(
    gateway: StripeGateway, params: ChargeListParams
) -> AsyncIterator[tuple[stripe.Charge, stripe.PaymentIntent]]:
    """Charges made by PaymentIntents, with the PaymentIntent expanded: one request a page of 100,
    not one more for each charge."""
    listed = await _call(
        gateway.client.v1.charges.list_async(params={**params, "limit": 100, "expand": ["data.payment_intent"]})
    )
    async for charge in listed.auto_paging_iter():
        if isinstance(charge.payment_intent, stripe.PaymentIntent):
            yield charge, charge.payment_intent


async def client_secret_of(gateway: StripeGateway, payment_intent_id: str) -> str | None:
    """What the customer's browser needs to complete a PaymentIntent that waits for them."""
    return (await _call(gateway.client.v1.payment_intents.retrieve_async(payment_intent_id))).client_secret


async def current_intent(gateway: StripeGateway, payment_intent_id: str) -> Charge:
    """A PaymentIntent's state now, for events that may arrive out of order."""
    return charge_of_intent(await _call(gateway.client.v1.payment_intents.retrieve_async(payment_intent_id)))


@dataclass(frozen=True)
class StripeSidePayment:
    """A PaymentIntent made for a Tally invoice, as Stripe has it, with its charge."""

    payment_intent_id: str
    invoice_id: str
    status: str
    amount: int
    currency: str
    charge_id: str | None
    amount_refunded: int
    disputed: bool

    def as_seen(self) -> dict[str, object]:
        return {
            "payment_intent": self.payment_intent_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "charge": self.charge_id,
            "amount_refunded": self.amount_refunded,
            "disputed": self.disputed,
        }


def _side_payment(intent: stripe.PaymentIntent, charge: stripe.Charge | None) -> StripeSidePayment:
    metadata = _tally_metadata(intent)
    return StripeSidePayment(
        payment_intent_id=intent.id,
        invoice_id=str(metadata.get("tally_invoice_id", "")),
        status=intent.status,
        amount=charge.amount if charge is not None else intent.amount,
        currency=(charge.currency if charge is not None else intent.currency).upper(),
        charge_id=charge.id if charge is not None else None,
        amount_refunded=charge.amount_refunded if charge is not None else 0,
        disputed=bool(getattr(charge, "disputed", False)) if charge is not None else False,  # localstripe omits it
    )


async def tally_payments_in_stripe(gateway: StripeGateway, *, since: datetime) -> list[StripeSidePayment]:
    """Every successful charge since ``since`` whose PaymentIntent was made for a Tally invoice."""
    return [
        _side_payment(intent, charge)
        async for charge, intent in _charges_with_intents(gateway, {"created": {"gt": int(since.timestamp())}})
        if charge.status == "succeeded" and "tally_invoice_id" in _tally_metadata(intent)
    ]


async def payment_in_stripe(gateway: StripeGateway, payment_intent_id: str) -> StripeSidePayment | None:
    """One PaymentIntent and its latest charge; None when Stripe has no such PaymentIntent."""
    try:
        intent = await _call(gateway.client.v1.payment_intents.retrieve_async(payment_intent_id))
    except stripe.InvalidRequestError as error:
        if error.http_status == 404:
            return None
        raise
    charge_id = _latest_charge_id(intent)
    charge = await _call(gateway.client.v1.charges.retrieve_async(charge_id)) if charge_id else None
    return _side_payment(intent, charge)


@dataclass(frozen=True)
class Refund:
    """A refund Stripe made, and its charge's running total refunded (what Tally posts up to)."""

    refund_id: str
    charge_id: str
    charge_amount_refunded: int
    currency: str


class RefundRefused(Exception):
    """Stripe refused the refund (the payment cannot be refunded, or not by that much)."""


def _credit_note_metadata(refund: stripe.Refund) -> str | None:
    return refund.metadata.to_dict().get("tally_credit_note_id") if refund.metadata else None


async def _refund_made(gateway: StripeGateway, refund: stripe.Refund) -> Refund:
    charge_id = refund.charge if isinstance(refund.charge, str) or refund.charge is None else refund.charge.id
    assert charge_id is not None
    charge = await _call(gateway.client.v1.charges.retrieve_async(charge_id))
    return Refund(refund.id, charge_id, charge.amount_refunded, charge.currency.upper())


async def refund_payment(
    gateway: StripeGateway, *, payment_intent_id: str, amount: int, credit_note_id: uuid.UUID
) -> Refund:
    """Refund ``amount`` of a payment for a credit note, keyed ``credit_note:<id>:refund``: a retried
    call gets the first refund back, never a second one."""
    try:
        refund = await _call(
            gateway.client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_intent_id,
                    "amount": amount,
                    "metadata": {"tally_credit_note_id": str(credit_note_id)},
                },
                options={"idempotency_key": f"credit_note:{credit_note_id}:refund"},
            )
        )
    except stripe.InvalidRequestError as error:
        raise RefundRefused(str(error.user_message or error)) from error
    return await _refund_made(gateway, refund)


async def refund_already_made(
    gateway: StripeGateway, *, payment_intent_id: str, credit_note_id: uuid.UUID
) -> Refund | None:
    """The refund an earlier claim of a credit note may have made before a crash, found among the
    payment's refunds by its metadata (idempotency keys cover this for 24 hours on Stripe only, and
    stand-ins like localstripe ignore them)."""
    listed = await _call(
        gateway.client.v1.refunds.list_async(params={"payment_intent": payment_intent_id, "limit": 100})
    )
    async for refund in listed.auto_paging_iter():
        if _credit_note_metadata(refund) == str(credit_note_id):
            return await _refund_made(gateway, refund)
    return None
