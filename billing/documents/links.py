"""Signed, expiring links to an invoice's hosted page: no sign-in, nothing guessable.

A link's token is the invoice id and its expiry, signed with HMAC-SHA256 under Tally's secret
(itsdangerous, with a salt of its own so no other signed value of Tally's can pass for one). The
expiry is inside the signed payload, so each link carries its own lifetime and cannot be extended
by editing it. Nothing is stored: a link cannot be revoked one by one (rotating the secret revokes
them all), which is why links expire (at most a year).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

from billing.documents.errors import ExpiryOutOfRange, InvoiceLinkExpired, InvoiceLinkInvalid

SALT = "tally.invoice-link"
MAX_DAYS = 365
# Real tokens are about 110 characters; anything much longer is refused before it is parsed.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class InvoiceLink:
    invoice_id: uuid.UUID
    expires_at: datetime
    token: str


def check_expiry_days(days: int) -> int:
    if not 1 <= days <= MAX_DAYS:
        raise ExpiryOutOfRange(f"a link lasts 1 to {MAX_DAYS} days", field="expiresInDays")
    return days


def sign_link(secret: str, invoice_id: uuid.UUID, *, days: int, as_of: datetime) -> InvoiceLink:
    expires_at = (as_of + timedelta(days=check_expiry_days(days))).replace(microsecond=0)
    token = URLSafeSerializer(secret, salt=SALT).dumps({"i": invoice_id.hex, "e": int(expires_at.timestamp())})
    return InvoiceLink(invoice_id, expires_at, token)


def read_link(secret: str, token: str, *, as_of: datetime) -> InvoiceLink:
    """The invoice a token opens, or INVOICE_LINK_INVALID (altered, made up, oversized) or
    INVOICE_LINK_EXPIRED (genuine but past its expiry)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvoiceLinkInvalid("this invoice link is not valid", field="token")
    try:
        payload = URLSafeSerializer(secret, salt=SALT).loads(token)
        invoice_id = uuid.UUID(hex=payload["i"])
        expires_at = datetime.fromtimestamp(int(payload["e"]), UTC)
    except (BadSignature, KeyError, TypeError, ValueError, OverflowError, OSError):
        raise InvoiceLinkInvalid("this invoice link is not valid", field="token") from None
    if expires_at <= as_of:
        raise InvoiceLinkExpired("this invoice link has expired; ask for a new one", field="token")
    return InvoiceLink(invoice_id, expires_at, token)
