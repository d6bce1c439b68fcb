"""The refusals of collection through Stripe, each with its stable code (part of the public contract)."""

from __future__ import annotations

from ledger.errors import InvalidInput


class CollectionOff(InvalidInput):
    code = "COLLECTION_OFF"

    def __init__(self) -> None:
        super().__init__("collection is off: set STRIPE_API_KEY (and STRIPE_API_BASE for a stand-in)", field=None)


class SignatureInvalid(InvalidInput):
    """A Stripe webhook whose signature or timestamp does not check out."""

    code = "SIGNATURE_INVALID"
