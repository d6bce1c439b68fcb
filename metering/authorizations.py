"""Authorizations: a quantity of a meter held for a customer before it is used, so that callers
racing for the last units of a limit cannot pass it together.

The entitlement read (:func:`metering.entitlements.entitlement_by_external_id`) answers ``used < limit``
and holds nothing: two callers that read it at once may both go ahead. An authorization answers
whether ``used + held + quantity <= limit`` and, when it does, holds the quantity, in one
transaction that takes the (customer, meter) pair's turn first (an advisory lock), so the
authorizations of a pair run one after another and none misses another's hold.

A hold counts until the usage event that names it is ingested (:func:`settle`, in the ingestion's
transaction: from then on the usage counts it instead) or until it expires (``expires_at`` is
compared when read: no job needs to run for the count to be right; :func:`prune` only deletes old
rows). Held quantities are counted against every limited charge of the meter, whatever
dimensions its ``where`` selects: a hold never lets usage pass a limit, at worst it refuses early.

Read order matters under concurrent ingestion: what is held is read before what is used. An
event settling a hold and committing between the two reads is then counted twice (refusing
early, for that one moment) rather than not at all (which could let a caller pass the limit).
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.errors import IdempotencyKeyReused, InvalidInput, NotFound
from ledger.money import plain_decimal
from metering import repository
from metering.entitlements import ReadAhead, edge_entitlement, reads_ahead
from metering.errors import (
    InvalidBody,
    InvalidIdempotencyKey,
    InvalidMeterKey,
    InvalidQuantity,
    InvalidTtl,
    MeterNotAdditive,
    UnknownMeter,
)
from metering.events import IngestLimits, read_value, text_problem

DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 86_400
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_METER_KEY_LENGTH = 255
#: Aggregations whose usage grows by what an event adds, so that ``used + held`` is what usage will
#: be: a ``max`` or ``latest`` meter reads a level, which a hold cannot add to.
ADDITIVE_AGGREGATIONS = frozenset({"count", "sum", "unique_count"})
#: Reasons an entitlement refuses whatever the quantity (the limit's own reason is LIMIT_REACHED).
_BLOCKING_REASONS = frozenset({"CUSTOMER_SUSPENDED", "SUBSCRIPTION_CANCELED", "SUBSCRIPTION_PAUSED"})
#: How long an expired authorization is kept (its idempotency key still answering) before pruning.
KEEP_AFTER_EXPIRY = timedelta(days=7)
_FIELDS = {"meter", "quantity", "idempotencyKey", "ttlSeconds"}


#: Callers of one process that may wait at the database lock of one (customer, meter) at once; the
#: others queue in the process (:func:`process_turn`) holding no pooled connection, so a hot
#: customer's 64 callers cannot take every connection of the process and starve its other requests.
#: More than one, so that the next caller already waits in PostgreSQL when a turn ends and takes
#: the lock there without a round trip (one alone measured 90 against 148 turns a second on one
#: customer, bench/README.md).
PAIR_CONCURRENCY = 4
_turns: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakValueDictionary[tuple[str, str], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


def process_turn(external_id: str, meter_key: str) -> asyncio.Semaphore:
    """What to hold around an authorization's transaction: at most :data:`PAIR_CONCURRENCY` callers
    of a (customer, meter) pair past it at once in this process (the database lock orders them,
    and the processes). Kept while a caller holds or awaits it (weak values), per event loop."""
    by_pair = _turns.setdefault(asyncio.get_running_loop(), weakref.WeakValueDictionary())
    found = by_pair.get((external_id, meter_key))
    if found is None:
        found = by_pair[(external_id, meter_key)] = asyncio.Semaphore(PAIR_CONCURRENCY)
    return found


@dataclass(frozen=True)
class AuthorizationRequest:
    meter_key: str
    quantity: Decimal
    idempotency_key: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class Authorization:
    """An answer: allowed (and held until ``expires_at`` unless settled first) or refused, with
    what the meter has used, its limit, what is held (this hold included) and what remains to
    authorize (after this hold)."""

    id: uuid.UUID
    customer_id: uuid.UUID
    meter_key: str
    quantity: Decimal
    idempotency_key: str
    ttl_seconds: int
    allowed: bool
    reason: str | None
    used: Decimal
    limit: Decimal | None
    remaining: Decimal | None
    reserved: Decimal
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    settled_by_event: str | None

    @property
    def live(self) -> bool:
        return self.allowed and self.settled_at is None

    @classmethod
    def from_row(cls, row: dict[str, Any], meter_key: str) -> Authorization:
        def plain(value: Decimal | None) -> Decimal | None:
            return plain_decimal(value) if value is not None else None

        return cls(
            id=row["id"],
            customer_id=row["customer_id"],
            meter_key=meter_key,
            quantity=plain_decimal(row["quantity"]),
            idempotency_key=row["idempotency_key"],
            ttl_seconds=row["ttl_seconds"],
            allowed=row["allowed"],
            reason=row["reason"],
            used=plain_decimal(row["used"]),
            limit=plain(row["usage_limit"]),
            remaining=plain(row["remaining"]),
            reserved=plain_decimal(row["reserved"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            settled_at=row["settled_at"],
            settled_by_event=row["settled_by_event"],
        )


@dataclass(frozen=True)
class Authorized:
    authorization: Authorization
    created: bool  # False: the answer of an earlier request with the same key


def read_request(body: Any, limits: IngestLimits) -> AuthorizationRequest:
    """The request of ``POST /v1/customers/{id}/authorizations`` from its decoded JSON (numbers as
    exact decimals); an :class:`InvalidInput` naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidBody("send a JSON object", field="body")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidBody(f"unknown field {unknown[0]!r}", field=unknown[0][:100])
    return AuthorizationRequest(
        meter_key=_text(body.get("meter"), "meter", MAX_METER_KEY_LENGTH, InvalidMeterKey),
        quantity=quantity_of(body.get("quantity"), limits),
        idempotency_key=key_of(body.get("idempotencyKey")),
        ttl_seconds=ttl_of(body.get("ttlSeconds", DEFAULT_TTL_SECONDS)),
    )


def ttl_of(raw: Any) -> int:
    """How long a hold lasts unsettled: a whole number of seconds from 1 to :data:`MAX_TTL_SECONDS`."""
    ttl = int(raw) if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value() else raw
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise InvalidTtl(f"ttlSeconds must be a whole number from 1 to {MAX_TTL_SECONDS}", field="ttlSeconds")
    return ttl


def key_of(raw: Any) -> str:
    """An idempotency key: non-empty text of at most :data:`MAX_IDEMPOTENCY_KEY_LENGTH` characters."""
    return _text(raw, "idempotencyKey", MAX_IDEMPOTENCY_KEY_LENGTH, InvalidIdempotencyKey)


def _text(value: Any, field: str, max_length: int, refusal: type[InvalidInput]) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        message = f"{field} must be a non-empty string of at most {max_length} characters"
        raise refusal(message, field=field)
    if problem := text_problem(value):
        raise refusal(f"{field} {problem}", field=field)
    return value


def quantity_of(raw: Any, limits: IngestLimits) -> Decimal:
    """A positive quantity within the bounds every usage quantity keeps (``TALLY_QUANTITY_MAX``
    and ``TALLY_QUANTITY_MAX_PLACES``), from a JSON number or a decimal string, read exactly."""
    value = None if isinstance(raw, bool) else read_value(raw)
    bound = format(limits.quantity_max, "f")
    if (
        value is None
        or not value.is_finite()
        or value <= 0
        or value > limits.quantity_max
        or -int(value.as_tuple().exponent) > limits.quantity_max_places
    ):
        raise InvalidQuantity(
            f"quantity must be a number or a decimal string above 0, at most {bound}, "
            f"with at most {limits.quantity_max_places} decimal places",
            field="quantity",
        )
    return value


async def authorize(
    session: AsyncSession,
    external_id: str,
    request: AuthorizationRequest,
    *,
    as_of: datetime,
    may_see: Callable[[uuid.UUID], bool],
) -> Authorized:
    """Authorize ``request`` for the customer, in the caller's transaction, which must commit (or
    roll back) promptly: it holds the (customer, meter) pair's turn until it ends. A customer the
    caller may not see is not found, like an unknown one."""
    ahead = reads_ahead(external_id, request.meter_key, as_of=as_of)
    rows, found, ahead_rows = await repository.edge_lookup_locked(
        session, external_id, request.meter_key, request.idempotency_key, as_of, also=ahead
    )
    if not rows or not may_see(rows[0]["customer_id"]):
        raise NotFound(f"no customer {external_id!r}", field="customer")
    customer_id, meter_id = rows[0]["customer_id"], rows[0]["meter_id"]
    if meter_id is None:
        raise UnknownMeter(request.meter_key)
    if rows[0]["aggregation"] not in ADDITIVE_AGGREGATIONS:
        raise MeterNotAdditive(
            f"meter {request.meter_key!r} reads a level ({rows[0]['aggregation']}), which cannot be held in advance",
            field="meter",
        )
    if found["id"] is not None:
        return Authorized(_replayed(found, meter_id, request), created=False)
    held = Decimal(found["held"])
    answer = await edge_entitlement(session, external_id, rows, ReadAhead(ahead, ahead_rows), as_of=as_of)
    assert answer is not None and answer.entitlement is not None  # the customer and the meter were just found
    entitlement = answer.entitlement
    if entitlement.reason in _BLOCKING_REASONS:
        allowed, reason = False, entitlement.reason
    elif entitlement.limit is None:
        allowed, reason = True, None
    else:
        allowed = entitlement.limit - entitlement.used - held >= request.quantity
        reason = None if allowed else "LIMIT_REACHED"
    reserved = held + request.quantity if allowed else held
    remaining = None if entitlement.limit is None else max(entitlement.limit - entitlement.used - reserved, Decimal(0))
    row = {
        "id": uuid.uuid4(),
        "customer_id": customer_id,
        "meter_id": meter_id,
        "idempotency_key": request.idempotency_key,
        "quantity": request.quantity,
        "ttl_seconds": request.ttl_seconds,
        "allowed": allowed,
        "reason": reason,
        "used": entitlement.used,
        "usage_limit": entitlement.limit,
        "remaining": remaining,
        "reserved": reserved,
        "created_at": as_of,
        "expires_at": as_of + timedelta(seconds=request.ttl_seconds),
        "settled_at": None,
        "settled_by_event": None,
    }
    if not await repository.record_authorization(session, row):
        # The same key, for another meter of the customer, committed meanwhile (another turn).
        keyed = await repository.keyed_authorization(session, customer_id, request.idempotency_key)
        return Authorized(_replayed(keyed, meter_id, request), created=False)
    return Authorized(Authorization.from_row(row, request.meter_key), created=True)


def _replayed(row: dict[str, Any], meter_id: uuid.UUID, request: AuthorizationRequest) -> Authorization:
    """The first answer given with this key, when the request is the same one again."""
    if row["meter_id"] != meter_id or row["quantity"] != request.quantity or row["ttl_seconds"] != request.ttl_seconds:
        raise IdempotencyKeyReused()
    return Authorization.from_row(row, request.meter_key)


async def live(
    session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime, limit: int = 100
) -> list[Authorization]:
    """The customer's authorizations holding usage now, soonest to expire first."""
    rows = await repository.live_authorizations(session, customer_id, as_of, limit=limit)
    return [Authorization.from_row(row, row["meter_key"]) for row in rows]


async def settle(session: AsyncSession, references: list[tuple[str, uuid.UUID]], *, received_at: datetime) -> None:
    """Release the authorizations that newly stored (or already stored) events name, in the
    ingestion's transaction: the usage those events add now counts what the holds counted."""
    if references:
        await repository.settle_authorizations(session, references, received_at=received_at)


async def prune(session: AsyncSession, *, as_of: datetime, limit: int = 10_000) -> int:
    """Delete authorizations expired more than :data:`KEEP_AFTER_EXPIRY` ago (their keys no
    longer answer a retry); they counted nothing since they expired."""
    return await repository.prune_authorizations(session, before=as_of - KEEP_AFTER_EXPIRY, limit=limit)
