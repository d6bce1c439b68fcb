"""Spend authorizations: an amount of money held for a customer before it is spent, so that
callers racing for the last of a customer's credits (or of their spend cap) cannot pass it together.

What an amount is held against, in the customer's currency, as the period stands now:

- **credits available**: the credit balance less what the open period's invoice would draw from
  it (:func:`billing.invoices.service.upcoming_invoice`, the figure that invoice would show), and
- **spend cap headroom**, when the customer has a spend cap (``credit_balance_settings.spend_cap``,
  the most one billing period may charge beyond the credits): the cap less what the period
  charges beyond the credits so far (base fee and usage, before tax, as spend alerts count it).

An amount is allowed when every live money hold, this one included, fits in their sum; without a
cap, a customer can spend only what their credits cover (prepaid). Each decision takes the
customer's turn first (a transaction-scoped advisory lock), so the holds of one customer are
decided one after another and none misses another's. A hold counts until the usage event naming it
is ingested (its cost then counts in the period's charges instead) or until it expires.

Holds share ``usage_authorizations`` (and its idempotency keys) with the holds of a meter's
quantity (:mod:`metering.authorizations`), so one key names one request of a customer, and one
event settles either kind the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.credits import repository as topup_repository
from billing.credits import topups
from billing.credits.errors import InvalidAmount, InvalidCurrency
from billing.invoices.service import BillingWindow, upcoming_invoice
from customers import service as customers
from ledger.errors import CurrencyMismatch, IdempotencyKeyReused, InvalidInput, NotFound
from ledger.money import MAX_MINOR_UNITS, normalize_currency, parse_decimal, to_minor_exact
from ledger.service import balances
from metering.authorizations import DEFAULT_TTL_SECONDS, key_of, ttl_of
from metering.errors import InvalidBody

#: The largest amount one authorization may hold, in minor units: far above any real purchase and
#: far below where sums of holds could overflow a bigint.
MAX_AMOUNT = 10**15
_FIELDS = {"amount", "currency", "idempotencyKey", "ttlSeconds"}


@dataclass(frozen=True)
class SpendRequest:
    amount: int  # minor units of ``currency``
    currency: str
    idempotency_key: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class SpendAuthorization:
    """An answer: allowed (held until ``expires_at`` unless settled first) or refused, with the
    figures it was decided on, all in minor units of ``currency``."""

    id: uuid.UUID
    customer_id: uuid.UUID
    amount: int
    currency: str
    idempotency_key: str
    ttl_seconds: int
    allowed: bool
    reason: str | None  # INSUFFICIENT_CREDITS, SPEND_CAP_REACHED or CUSTOMER_SUSPENDED when refused
    spent: int  # what the period charges beyond the credits so far
    credits_available: int  # the credits the period's charges leave
    spend_cap: int | None
    reserved: int  # what live money holds held then, this one included when allowed
    remaining: int  # what is left to authorize after this one
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    settled_by_event: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SpendAuthorization:
        return cls(
            id=row["id"],
            customer_id=row["customer_id"],
            amount=row["amount"],
            currency=row["currency"],
            idempotency_key=row["idempotency_key"],
            ttl_seconds=row["ttl_seconds"],
            allowed=row["allowed"],
            reason=row["reason"],
            spent=int(row["used"]),
            credits_available=row["credits_available"],
            spend_cap=int(row["usage_limit"]) if row["usage_limit"] is not None else None,
            reserved=int(row["reserved"]),
            remaining=int(row["remaining"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            settled_at=row["settled_at"],
            settled_by_event=row["settled_by_event"],
        )


@dataclass(frozen=True)
class SpendAuthorized:
    authorization: SpendAuthorization
    created: bool  # False: the answer of an earlier request with the same key


def is_spend_request(body: Any) -> bool:
    """Whether a decoded ``POST /v1/customers/{id}/authorizations`` body asks to hold money (an
    ``amount``) rather than a meter's quantity."""
    return isinstance(body, dict) and "amount" in body


def read_spend_request(body: dict[str, Any]) -> SpendRequest:
    """The money request from its decoded JSON; an :class:`InvalidInput` naming the field otherwise."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        message = f"unknown field {unknown[0]!r} (an amount is held with amount, currency, idempotencyKey, ttlSeconds)"
        raise InvalidBody(message, field=unknown[0][:100])
    raw_currency = body.get("currency")
    try:
        currency = normalize_currency(raw_currency if isinstance(raw_currency, str) else "")
    except InvalidInput:
        raise InvalidCurrency("currency must be an ISO 4217 code such as USD", field="currency") from None
    return SpendRequest(
        amount=amount_of(body.get("amount"), currency),
        currency=currency,
        idempotency_key=key_of(body.get("idempotencyKey")),
        ttl_seconds=ttl_of(body.get("ttlSeconds", DEFAULT_TTL_SECONDS)),
    )


def amount_of(raw: Any, currency: str) -> int:
    """Minor units of a positive amount written in major units (a JSON number or a decimal
    string), with no fraction of the currency's minor unit."""
    problem = InvalidAmount(
        f"amount must be a number or a decimal string above 0 in {currency}, at most "
        f"{MAX_AMOUNT:,} minor units, with no fraction of a minor unit",
        field="amount",
    )
    if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
        raise problem
    try:
        value = parse_decimal(raw, field="amount")
        minor = to_minor_exact(value, currency, field="amount") if value.is_finite() else 0
    except InvalidInput:
        raise problem from None
    if not 0 < minor <= MAX_AMOUNT:
        raise problem
    return minor


async def authorize_spend(
    session: AsyncSession,
    customer_id: uuid.UUID,
    request: SpendRequest,
    *,
    as_of: datetime,
    window: BillingWindow,
) -> SpendAuthorized:
    """Authorize ``request`` for the customer in the caller's transaction, which must commit (or
    roll back) promptly: it holds the customer's turn until it ends."""
    customer = await customers.get_customer(session, customer_id=customer_id)
    if customer is None:
        raise NotFound("no such customer", field="customer")
    await topup_repository.take_spend_turn(session, customer_id)
    found = await topup_repository.money_held_and_keyed(
        session, customer_id, idempotency_key=request.idempotency_key, as_of=as_of
    )
    if found["id"] is not None:
        return SpendAuthorized(_replayed(found, request), created=False)
    if request.currency != customer.currency:
        raise CurrencyMismatch(
            f"the customer is billed in {customer.currency}, not {request.currency}",
            field="currency",
        )
    held = int(found["held"])
    standing = await spend_standing(session, customer_id, customer.currency, as_of=as_of, window=window)
    headroom = max(standing.spend_cap - standing.spent, 0) if standing.spend_cap is not None else 0
    available = standing.credits_available + headroom
    allowed = customer.status != "SUSPENDED" and held + request.amount <= available
    reason: str | None = None
    if customer.status == "SUSPENDED":
        reason = "CUSTOMER_SUSPENDED"
    elif not allowed:
        reason = "SPEND_CAP_REACHED" if standing.spend_cap is not None else "INSUFFICIENT_CREDITS"
    reserved = held + request.amount if allowed else held
    row = {
        "id": uuid.uuid4(),
        "customer_id": customer_id,
        "idempotency_key": request.idempotency_key,
        "amount": request.amount,
        "currency": request.currency,
        "ttl_seconds": request.ttl_seconds,
        "allowed": allowed,
        "reason": reason,
        "used": standing.spent,
        "usage_limit": standing.spend_cap,
        "remaining": max(available - reserved, 0),
        "reserved": reserved,
        "credits_available": standing.credits_available,
        "created_at": as_of,
        "expires_at": as_of + timedelta(seconds=request.ttl_seconds),
        "settled_at": None,
        "settled_by_event": None,
    }
    if not await topup_repository.insert_authorization_once(session, row):
        # The same key, held for a meter's quantity, committed meanwhile (a meter has its own turn).
        keyed = await topup_repository.authorization_by_key(session, customer_id, request.idempotency_key)
        return SpendAuthorized(_replayed(keyed, request), created=False)
    return SpendAuthorized(SpendAuthorization.from_row(row), created=True)


def _replayed(row: dict[str, Any], request: SpendRequest) -> SpendAuthorization:
    """The first answer given with this key, when the request is the same one again."""
    if (
        row["meter_id"] is not None
        or row["amount"] != request.amount
        or row["currency"] != request.currency
        or row["ttl_seconds"] != request.ttl_seconds
    ):
        raise IdempotencyKeyReused()
    return SpendAuthorization.from_row(row)


@dataclass(frozen=True)
class SpendStanding:
    """Where a customer's period stands, in minor units of their currency."""

    spent: int  # charged beyond the credits so far: base fee and usage less the credits they draw
    credits_available: int  # the credit balance less what the period's invoice would draw
    spend_cap: int | None


async def spend_standing(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, *, as_of: datetime, window: BillingWindow
) -> SpendStanding:
    credits = (await balances(session, customer_id, currency)).credits
    upcoming = await upcoming_invoice(session, customer_id, as_of=as_of, window=window)
    drawn = upcoming.credits_applied if upcoming is not None else 0
    spent = upcoming.running_amount if upcoming is not None else 0
    settings = await topup_repository.settings_of(session, customer_id)
    return SpendStanding(
        spent=spent,
        credits_available=max(credits - drawn, 0),
        spend_cap=settings.spend_cap if settings is not None else None,
    )


async def live_spend(
    session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime, limit: int = 100
) -> list[SpendAuthorization]:
    """The customer's money holds live now, soonest to expire first."""
    rows = await topup_repository.live_money_holds(session, customer_id, as_of=as_of, limit=limit)
    return [SpendAuthorization.from_row(row) for row in rows]


async def set_spend_cap(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, amount: Decimal | None, *, actor: str, as_of: datetime
) -> int | None:
    """Set the most a billing period of the customer may charge beyond their credits (None: no
    cap; a setting, so a retry sets the same again); its minor units."""
    customer = await topups.customer_in(session, customer_id, currency)
    spend_cap = spend_cap_of(amount, customer.currency)
    await topup_repository.save_spend_cap(
        session,
        customer.id,
        customer.currency,
        spend_cap,
        default_recharge_priority=topups.DEFAULT_PRIORITY,
        actor=actor,
        as_of=as_of,
    )
    return spend_cap


def spend_cap_of(value: Decimal | None, currency: str, *, field: str = "amount") -> int | None:
    """Minor units of a spend cap written in major units: above zero with no fraction of the minor
    unit, or None for no cap."""
    if value is None:
        return None
    problem = InvalidAmount(
        f"a spend cap must be an amount above 0 in {currency} with no fraction of a minor unit "
        "(leave it empty for no cap)",
        field=field,
    )
    try:
        minor = to_minor_exact(value, currency, field=field) if value.is_finite() else 0
    except InvalidInput:
        raise problem from None
    if not 0 < minor <= MAX_MINOR_UNITS:
        raise problem
    return minor
