"""The Stripe gateway: the official SDK's `StripeClient`, its API base configurable (localstripe in
tests), timeouts, network retries, and an idempotency key on every write, derived from Tally's ids,
so a retried call never creates a second object. Callers never hold a ledger lock across a call."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import stripe
from stripe.params import CustomerCreateParams, PaymentIntentCreateParams, SetupIntentCreateParams

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
    status: str  # succeeded, requires_action, processing, failed
    payment_intent_id: str | None
    error: str | None = None


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise StripeUnavailable(str(error.user_message or error)) from error
    except stripe.APIError as error:
        raise StripeUnavailable(str(error.user_message or error)) from error


async def saved_card(gateway: StripeGateway, stripe_customer_id: str) -> str | None:
    """The card to charge: the customer's default for invoices, else their only card (with several
    and no default, which one the customer meant is not ours to guess)."""
    customer = await _call(gateway.client.v1.customers.retrieve_async(stripe_customer_id))
    default = customer.invoice_settings.default_payment_method if customer.invoice_settings else None
    if default:
        return default if isinstance(default, str) else default.id
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
    idempotency_key: str,
) -> Charge:
    """Create and confirm an off-session PaymentIntent for an invoice; a declined card is an
    answer (``failed``), Stripe being unreachable is :class:`StripeUnavailable`."""
    params: PaymentIntentCreateParams = {
        "amount": amount,
        "currency": currency.lower(),
        "customer": stripe_customer_id,
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        "metadata": {"tally_invoice_id": str(invoice_id)},
    }
    try:
        intent = await _call(
            gateway.client.v1.payment_intents.create_async(params=params, options={"idempotency_key": idempotency_key})
        )
    except stripe.CardError as error:
        declined = getattr(error.error, "payment_intent", None)
        return Charge("failed", declined.id if declined is not None else None, error.user_message or "card declined")
    status = intent.status if intent.status in ("succeeded", "requires_action", "processing") else "failed"
    return Charge(status, intent.id, None if status != "failed" else f"payment intent {intent.status}")
