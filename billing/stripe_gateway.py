"""The Stripe gateway: the official SDK's `StripeClient`, its API base configurable (localstripe in
tests), timeouts, network retries, and an idempotency key on every write, derived from Tally's ids,
so a retried call never creates a second object. Callers never hold a ledger lock across a call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import stripe
from stripe.params import CustomerCreateParams, SetupIntentCreateParams


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
