"""The Stripe gateway the settings describe, built once per process (None: collection is off)."""

from __future__ import annotations

from functools import lru_cache

from app.settings import Settings
from billing.collection.stripe_gateway import StripeConfig, StripeGateway


def stripe_gateway(settings: Settings) -> StripeGateway | None:
    if not settings.stripe_api_key:
        return None
    return _gateway(
        StripeConfig(
            api_key=settings.stripe_api_key,
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
            max_network_retries=settings.stripe_max_network_retries,
        )
    )


@lru_cache(maxsize=4)
def _gateway(config: StripeConfig) -> StripeGateway:
    return StripeGateway(config)
