"""Entitlements: whether a customer may use more of a meter now (``used < limit`` under the
limits of the charges that price it, in the current period of the subscription that charges it),
asked by the edge (:func:`entitlement_by_external_id`, in as few round trips as it can) and by the
roller's alerts (:func:`meter_standings`). Usage itself is read by :mod:`metering.usage`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from cachetools import LRUCache
from sqlmodel.ext.asyncio.session import AsyncSession

from customers import service as customers
from customers.calendar import current_period as subscription_period
from customers.lifecycle import subscription_status
from customers.models import Subscription
from customers.periods import calendar_month
from customers.price_overrides import overrides_of_customer
from ledger.money import plain_decimal
from metering import repository
from metering.usage import MeterUsage, Period, UsageReading, current_pricings, period_of, usage
from pricing.models import Meter, PlanCharge
from pricing.overrides import NO_OVERRIDES, OverrideTimeline
from pricing.service import charges_of_version, meter_by_key, plan_version


@dataclass(frozen=True)
class Entitlement:
    allowed: bool
    used: Decimal
    limit: Decimal | None
    remaining: Decimal | None
    # Why not allowed: SUBSCRIPTION_CANCELED, SUBSCRIPTION_PAUSED, CUSTOMER_SUSPENDED, LIMIT_REACHED.
    reason: str | None = None


def blocked(found: Entitlement, subscription: Subscription | None, as_of: datetime) -> Entitlement:
    """The entitlement of a canceled or paused subscription: refused whatever its usage."""
    status = subscription_status(subscription, as_of) if subscription is not None else "ACTIVE"
    if status == "ACTIVE":
        return found
    return replace(found, allowed=False, reason=f"SUBSCRIPTION_{status}")


def entitlement_of(meter_usage: MeterUsage, charges: list[PlanCharge], *, suspended: bool) -> Entitlement:
    """Allowed while every limited charge of the meter is below its limit (``used < limit``);
    the tightest charge is reported. No limit: always allowed. A suspended customer: never."""
    limited = [charge for charge in charges if charge.usage_limit is not None]
    if not limited:
        suspension = "CUSTOMER_SUSPENDED" if suspended else None
        return Entitlement(not suspended, plain_decimal(meter_usage.quantity()), None, None, suspension)
    tightest = min(
        ((meter_usage.quantity(dict(charge.where)), charge) for charge in limited),
        key=lambda pair: pair[1].usage_limit - pair[0],  # type: ignore[operator]
    )
    used, charge = tightest
    assert charge.usage_limit is not None
    below = all(meter_usage.quantity(dict(c.where)) < c.usage_limit for c in limited)  # type: ignore[operator]
    allowed = not suspended and below
    reason = "CUSTOMER_SUSPENDED" if suspended else None if below else "LIMIT_REACHED"
    limit = plain_decimal(charge.usage_limit)
    return Entitlement(allowed, plain_decimal(used), limit, plain_decimal(max(limit - used, Decimal(0))), reason)


async def entitlement(
    session: AsyncSession, customer_id: uuid.UUID, meter_key: str, *, suspended: bool, as_of: datetime
) -> Entitlement | None:
    """The customer's entitlement to a meter in the current period; None for an unknown meter."""
    meter = await meter_by_key(session, meter_key)
    if meter is None:
        return None
    subscriptions = (await customers.all_subscriptions_of(session, [customer_id]))[customer_id]
    return await _entitlement_of(session, customer_id, meter, subscriptions, suspended=suspended, as_of=as_of)


async def _entitlement_of(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meter: Meter,
    subscriptions: list[Subscription],
    *,
    suspended: bool,
    as_of: datetime,
) -> Entitlement:
    """Each subscription whose plan charges the meter now answers in its own period; with
    several, the most generous answer wins (allowed over refused, then the highest limit, no
    limit highest): the meter is refused only when every one of them refuses. When none charges
    it, the customer's primary subscription (the first) answers, as it would alone."""
    answering: list[Subscription | None] = []
    if len(subscriptions) > 1:
        for candidate in subscriptions:
            charged = await charges_of_version(session, candidate.version_at(as_of))
            if any(charged_meter.id == meter.id for _, charged_meter in charged):
                answering.append(candidate)
    answers = []
    for subscription in answering or [subscriptions[0] if subscriptions else None]:
        period, version_id, overrides = await period_of(session, subscription, as_of)
        found = await _entitlement_in(
            session, customer_id, meter, period, version_id, suspended=suspended, as_of=as_of, overrides=overrides
        )
        answers.append(blocked(found, subscription, as_of))
    return max(answers, key=_generosity)


def _generosity(answer: Entitlement) -> tuple[bool, bool, Decimal]:
    return answer.allowed, answer.limit is None, answer.limit or Decimal(0)


async def _entitlement_in(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meter: Meter,
    period: Period,
    version_id: uuid.UUID | None,
    *,
    suspended: bool,
    as_of: datetime,
    overrides: OverrideTimeline = NO_OVERRIDES,
    ahead: ReadAhead | None = None,
) -> Entitlement:
    """Limits are the customer's: a price override's limit (or its lifting) in effect at ``as_of``.
    Usage comes from the reads sent ahead when they are the ones this period needs."""
    charges = []
    if version_id is not None:
        charges = [
            overrides.charge_at(charge, as_of)
            for charge, m in await charges_of_version(session, version_id)
            if m.id == meter.id
        ]
    reading = UsageReading.of(customer_id, [meter], period.start, period.end, as_of=as_of)
    if ahead is not None and ahead.reads == reading.reads:
        rows = ahead.rows
    else:
        rows = await repository.read_all(session, reading.reads)
    [meter_usage] = reading.usage(rows)
    return entitlement_of(meter_usage, charges, suspended=suspended)


@dataclass(frozen=True)
class EdgeEntitlement:
    customer_id: uuid.UUID
    entitlement: Entitlement | None  # None: no such meter


@dataclass(frozen=True)
class ReadAhead:
    """Usage reads sent in the round trip of the edge's lookup, before it says which period to
    read (:func:`reads_ahead`), and their rows. They are used only when they are exactly the reads
    the period found needs; otherwise the usage is read again, one round trip later."""

    reads: tuple[repository.Read, ...]
    rows: list[list[dict[str, Any]]]


@dataclass(frozen=True)
class _LastRead:
    customer_id: uuid.UUID
    meter: Meter
    period: Period


#: The customer, meter and period each (customer, meter) pair of the edge was last read in, by
#: external id and meter key: the next question about the pair is most likely in the same period.
_last_reads: LRUCache[tuple[str, str], _LastRead] = LRUCache(maxsize=65_536)


def reads_ahead(external_id: str, meter_key: str, *, as_of: datetime) -> tuple[repository.Read, ...]:
    """The usage reads of the pair's last period, if ``as_of`` is still in it; none otherwise."""
    last = _last_reads.get((external_id, meter_key))
    if last is None or not last.period.start <= as_of < last.period.end:
        return ()
    return UsageReading.of(last.customer_id, [last.meter], last.period.start, last.period.end, as_of=as_of).reads


async def entitlement_by_external_id(
    session: AsyncSession, external_id: str, meter_key: str, *, as_of: datetime
) -> EdgeEntitlement | None:
    """The edge's question, in as few round trips as it can be: customer, subscription and meter
    in one, with the period's usage read ahead (one round trip in all when the guess holds, else
    one more); None for an unknown customer."""
    ahead = reads_ahead(external_id, meter_key, as_of=as_of)
    rows, ahead_rows = await repository.edge_lookup(session, external_id, meter_key, also=ahead)
    return await edge_entitlement(session, external_id, rows, ReadAhead(ahead, ahead_rows), as_of=as_of)


_METER_COLUMNS = (
    "meter_id",
    "key",
    "name",
    "unit",
    "event_type",
    "aggregation",
    "value_property",
    "group_by",
    "created_at",
)
_SUBSCRIPTION_COLUMNS = (
    "customer_id",
    "plan_version_id",
    "started_at",
    "pending_plan_version_id",
    "pending_change_at",
    "cancel_at",
    "paused_at",
    "billing_anchor",
    "billing_anchor_day",
    "trial_ends_at",
    "pending_billing_anchor",
)


# The edge builds a meter and a subscription from each row it reads, and a SQLModel table model
# costs about 0.3 ms to construct: a third of an authorization's own time. The same row's object
# is reused (they are only read); the key is every column read, so a changed row is a new key.
@lru_cache(maxsize=4096)
def _edge_meter(values: tuple[Any, ...]) -> Meter:
    fields = dict(zip(_METER_COLUMNS, values, strict=True))
    return Meter(id=fields.pop("meter_id"), **{**fields, "group_by": list(fields["group_by"])})


@lru_cache(maxsize=4096)
def _edge_subscription(values: tuple[Any, ...]) -> Subscription:
    fields = dict(zip(_SUBSCRIPTION_COLUMNS, values, strict=True))
    return Subscription(**fields, created_at=fields["started_at"])


async def edge_entitlement(
    session: AsyncSession, external_id: str, rows: list[Any], ahead: ReadAhead, *, as_of: datetime
) -> EdgeEntitlement | None:
    """:func:`entitlement_by_external_id` from the rows of :func:`repository.edge_lookup` (or of a
    statement that read the same columns, such as the one authorizations lock with) and the usage
    reads sent ahead with them; remembers the period read, for the pair's next question."""
    if not rows:
        return None
    row = rows[0]
    if row["meter_id"] is None:
        return EdgeEntitlement(row["customer_id"], None)
    meter = _edge_meter(
        tuple(row[column] if column != "group_by" else tuple(row[column] or ()) for column in _METER_COLUMNS)
    )
    if len(rows) > 1:  # several subscriptions: the general path, one more query
        subscriptions = (await customers.all_subscriptions_of(session, [row["customer_id"]]))[row["customer_id"]]
        suspended = row["status"] == "SUSPENDED"
        found = await _entitlement_of(
            session, row["customer_id"], meter, subscriptions, suspended=suspended, as_of=as_of
        )
        return EdgeEntitlement(row["customer_id"], found)
    version_id: uuid.UUID | None = None
    subscription = None
    if row["started_at"] is None:
        start, end = calendar_month(as_of)
    else:
        subscription = _edge_subscription(tuple(row[column] for column in _SUBSCRIPTION_COLUMNS))
        version_id = subscription.version_at(as_of)
        version = await plan_version(session, version_id)
        current = subscription_period(subscription, version.interval, as_of)
        start, end = current.start, current.end
    overrides = NO_OVERRIDES
    if row["has_price_overrides"]:  # one more query, only for customers who have had an override
        overrides = await overrides_of_customer(session, row["customer_id"])
    period = Period(start, end)
    found = await _entitlement_in(
        session,
        row["customer_id"],
        meter,
        period,
        version_id,
        suspended=row["status"] == "SUSPENDED",
        as_of=as_of,
        overrides=overrides,
        ahead=ahead,
    )
    _last_reads[(external_id, row["key"])] = _LastRead(row["customer_id"], meter, period)
    return EdgeEntitlement(row["customer_id"], blocked(found, subscription, as_of))


@dataclass(frozen=True)
class MeterStanding:
    """A meter's usage so far in the period of the subscription that charges it, and its
    entitlement limit then (the tightest limited charge; None: unlimited)."""

    meter: Meter
    period: Period
    used: Decimal
    limit: Decimal | None
    exhausted: bool  # a limited charge of the meter is at or over its limit: the entitlement refuses


async def meter_standings(
    session: AsyncSession, customer_id: uuid.UUID, meters: list[Meter], *, as_of: datetime
) -> list[MeterStanding]:
    """The standing of each of ``meters`` and of every meter the customer's plans limit now.

    A meter is read in the period of the first subscription (the primary one first) whose plan
    charges it, else in the primary one's; its usage is read once per period, as the entitlement
    check reads it (the roller's alerts and ``entitlement.exhausted`` must agree with the edge)."""
    pricings = await current_pricings(session, customer_id, as_of)
    charged: dict[uuid.UUID, tuple[Period, Meter, list[PlanCharge]]] = {}
    for period, version_id, overrides in pricings:
        if version_id is None:
            continue
        in_version: dict[uuid.UUID, tuple[Period, Meter, list[PlanCharge]]] = {}
        for charge, meter in await charges_of_version(session, version_id):
            in_version.setdefault(meter.id, (period, meter, []))[2].append(overrides.charge_at(charge, as_of))
        charged = {**in_version, **charged}
    wanted = {meter.id: meter for meter in meters}
    wanted |= {
        meter_id: meter
        for meter_id, (_, meter, charges) in charged.items()
        if any(charge.usage_limit is not None for charge in charges)
    }
    by_period: dict[Period, list[Meter]] = {}
    for meter_id, meter in wanted.items():
        by_period.setdefault(charged[meter_id][0] if meter_id in charged else pricings[0][0], []).append(meter)
    standings = []
    for period, period_meters in by_period.items():
        for meter_usage in await usage(session, customer_id, period_meters, period.start, period.end, as_of=as_of):
            charges = charged[meter_usage.meter.id][2] if meter_usage.meter.id in charged else []
            found = entitlement_of(meter_usage, charges, suspended=False)
            standings.append(
                MeterStanding(
                    meter_usage.meter,
                    period,
                    plain_decimal(meter_usage.quantity()),
                    found.limit,
                    found.reason == "LIMIT_REACHED",
                )
            )
    return standings
