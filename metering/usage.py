"""Reading usage: exact quantities over any range, series for charts, the billing period,
the levels charged in advance and the cost of usage under a plan (entitlements: `metering.entitlements`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import service as customers
from customers.calendar import current_period as subscription_period
from customers.models import Subscription
from customers.periods import calendar_month
from customers.price_overrides import overrides_of
from metering import repository
from metering.aggregation import Partial, merge_all
from metering.errors import InvalidRange, TooManyPoints
from metering.events import FUTURE_TOLERANCE, MeterRule, canonical_json, dimension_text, loads_exact, measure
from pricing.advance import Reading
from pricing.models import Meter, PlanCharge
from pricing.overrides import NO_OVERRIDES, OverrideTimeline
from pricing.rating import ChargeTerms, allocate, needs_events, rate, rate_events
from pricing.service import charge_terms, plan_version


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + timedelta(hours=1)


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _rule(meter: Meter) -> MeterRule:
    return MeterRule(meter.id, meter.aggregation, meter.value_property, tuple(meter.group_by), meter.allow_negative)


@dataclass(frozen=True)
class MeterUsage:
    """A meter's usage over a range: in total and for each combination of its dimensions."""

    meter: Meter
    by_dimensions: dict[str, Partial]  # canonical JSON of the dimensions → aggregate

    @property
    def total(self) -> Partial:
        return merge_all(list(self.by_dimensions.values()))

    def quantity(self, where: dict[str, str] | None = None) -> Decimal:
        """The quantity, optionally of only the dimensions a charge's ``where`` selects."""
        selected = [
            partial
            for dimensions, partial in self.by_dimensions.items()
            if not where or dimensions_match(loads_exact(dimensions), where)
        ]
        return merge_all(selected).quantity(self.meter.aggregation)


def dimensions_match(dimensions: dict[str, Any], where: dict[str, str]) -> bool:
    return all(key in dimensions and dimension_text(dimensions[key]) == value for key, value in where.items())


async def usage(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meters: list[Meter],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
) -> list[MeterUsage]:
    """Exact usage over ``[start, end)``: whole hours from the rollups, the partial hours at
    either end from the raw events, merged per meter and dimensions, read in one round trip.

    With ``as_of``, a range reaching into the future is read only up to the end of the hour of
    ``as_of`` plus the accepted clock skew (no later event can exist yet): the same usage, without
    reading raw events for a partial hour that is still to come."""
    reading = UsageReading.of(customer_id, meters, start, end, as_of=as_of)
    return reading.usage(await repository.read_all(session, reading.reads))


@dataclass(frozen=True)
class UsageReading:
    """The reads :func:`usage` makes, apart from their rows, so that the edge can send them in the
    round trip of its own lookup (:mod:`metering.entitlements`); :meth:`usage` folds their rows."""

    customer_id: uuid.UUID
    meters: tuple[Meter, ...]
    start: datetime
    end: datetime
    reads: tuple[repository.Read, ...]
    kinds: tuple[str, ...]  # what each read is: rollups, latest, unique or raw

    @classmethod
    def of(
        cls, customer_id: uuid.UUID, meters: list[Meter], start: datetime, end: datetime, *, as_of: datetime | None
    ) -> UsageReading:
        if as_of is not None:
            end = min(end, _ceil_hour(as_of + FUTURE_TOLERANCE))
        reads: list[tuple[str, repository.Read]] = []
        interior_start, interior_end = _ceil_hour(start), _floor_hour(end)
        raw_ranges = [(start, end)]
        if interior_start < interior_end:
            raw_ranges = [(start, interior_start), (interior_end, end)]
            meter_ids = [meter.id for meter in meters]
            reads.append(("rollups", repository.rollup_partials(customer_id, meter_ids, interior_start, interior_end)))
            latest = [meter.id for meter in meters if meter.aggregation == "latest"]
            if latest:
                reads.append(("latest", repository.rollup_latest(customer_id, latest, interior_start, interior_end)))
            unique = [meter.id for meter in meters if meter.aggregation == "unique_count"]
            if unique:
                reads.append(("unique", repository.unique_values(customer_id, unique, interior_start, interior_end)))
        ranges = [(range_start, range_end) for range_start, range_end in raw_ranges if range_start < range_end]
        if ranges:
            event_types = list(dict.fromkeys(meter.event_type for meter in meters))
            reads.append(("raw", repository.raw_events(customer_id, event_types, ranges)))
        return cls(
            customer_id,
            tuple(meters),
            start,
            end,
            tuple(read for _, read in reads),
            tuple(kind for kind, _ in reads),
        )

    def usage(self, results: list[list[dict[str, Any]]]) -> list[MeterUsage]:
        """Each meter's usage from the rows of :attr:`reads`, in their order."""
        partials: dict[uuid.UUID, dict[str, Partial]] = {meter.id: {} for meter in self.meters}
        for kind, rows in zip(self.kinds, results, strict=True):
            if kind == "raw":
                _measure_events(rows, _rules_by_event_type(list(self.meters)), partials)
            else:
                _add_rollup_rows(kind, rows, partials)
        return [MeterUsage(meter, partials[meter.id]) for meter in self.meters]


async def usage_from_events(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meters: list[Meter],
    start: datetime,
    end: datetime,
    *,
    received_by: datetime,
) -> list[MeterUsage]:
    """The usage :func:`usage` reads, measured again from the raw events alone (no rollups) and
    only from those received by ``received_by``: what an invoice issued then could have billed.
    The invoice accuracy check compares the two; it reads every event of the range, so it is slow."""
    partials: dict[uuid.UUID, dict[str, Partial]] = {meter.id: {} for meter in meters}
    rules = _rules_by_event_type(meters)
    rows = await repository.raw_events_received_by(session, customer_id, list(rules), start, end, received_by)
    _measure_events(rows, rules, partials)
    return [MeterUsage(meter, partials[meter.id]) for meter in meters]


def _rules_by_event_type(meters: list[Meter]) -> dict[str, list[MeterRule]]:
    return {meter.event_type: [_rule(m) for m in meters if m.event_type == meter.event_type] for meter in meters}


def _measure_events(
    rows: list[Any], rules: dict[str, list[MeterRule]], partials: dict[uuid.UUID, dict[str, Partial]]
) -> None:
    for row in rows:
        properties = loads_exact(row["properties"])
        for rule in rules[row["event_type"]]:
            measured = measure(properties, rule)
            if isinstance(measured, str):
                continue  # stored events were validated; a meter declared later may not read them
            partials[rule.meter_id].setdefault(measured.dimensions, Partial()).add_event(
                row["occurred_at"], row["event_id"], measured.value, measured.unique_value
            )


def _add_rollup_rows(kind: str, rows: list[dict[str, Any]], partials: dict[uuid.UUID, dict[str, Partial]]) -> None:
    """Fold the rows of a rollup read (``rollups``, ``latest`` or ``unique``) into ``partials``."""
    for row in rows:
        dimensions = canonical_json(loads_exact(row["dimensions"]))
        by_dimensions = partials[row["meter_id"]]
        if kind == "unique":
            by_dimensions.setdefault(dimensions, Partial()).uniques.add(row["value"])
            continue
        if kind == "rollups":
            found = Partial(count=int(row["count"]), total=row["total"], maximum=row["maximum"])
        else:
            found = Partial(latest=(row["latest_at"], row["latest_event_id"], row["latest_value"]))
        by_dimensions[dimensions] = by_dimensions.get(dimensions, Partial()).merge(found)


@dataclass(frozen=True)
class SeriesPoint:
    start: datetime
    quantity: Decimal


#: The most points one usage series answers (hours or days).
MAX_SERIES_POINTS = 2000


def check_range(start: datetime, end: datetime) -> None:
    """A usage range is half-open, ``[start, end)``, and not empty."""
    if start >= end:
        raise InvalidRange("must be after from", field="to")


def check_series_range(start: datetime, end: datetime, granularity: str) -> None:
    """A series' range: not empty, and at most :data:`MAX_SERIES_POINTS` hours or days."""
    check_range(start, end)
    step_hours = 24 if granularity == "DAY" else 1
    if (end - start).total_seconds() / 3600 / step_hours > MAX_SERIES_POINTS:
        raise TooManyPoints(f"at most {MAX_SERIES_POINTS} points; use DAY or a shorter range", field="from")


async def usage_series(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meter: Meter,
    start: datetime,
    end: datetime,
    granularity: str,
) -> list[SeriesPoint]:
    """One point per hour or day (UTC) from the bucket containing ``start`` to ``end``; empty
    buckets are zero, so a chart shows gaps as zero rather than skipping them."""
    unit = "day" if granularity == "DAY" else "hour"
    step = timedelta(days=1) if unit == "day" else timedelta(hours=1)
    first = _floor_hour(start)
    if unit == "day":
        first = first.replace(hour=0)
    unique = meter.aggregation == "unique_count"
    rows = await repository.series(session, customer_id, meter.id, unit, first, end, unique=unique)
    by_bucket = {row["bucket"]: row for row in rows}
    points, bucket = [], first
    while bucket < end:
        row = by_bucket.get(bucket)
        points.append(SeriesPoint(bucket, _series_quantity(meter.aggregation, row) if row else Decimal(0)))
        bucket += step
    return points


def _series_quantity(aggregation: str, row: Any) -> Decimal:
    if aggregation == "unique_count":
        return Decimal(row["distinct_values"])
    value = {
        "count": row["count"],
        "sum": row["total"],
        "max": row["maximum"],
        "latest": row["latest_value"],
    }[aggregation]
    return Decimal(value) if value is not None else Decimal(0)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


async def current_period(
    session: AsyncSession, customer_id: uuid.UUID, as_of: datetime
) -> tuple[Period, uuid.UUID | None]:
    """The billing period containing ``as_of`` and the plan version that prices it; a customer
    with no subscription is measured by calendar month."""
    period, version_id, _ = await current_pricing(session, customer_id, as_of)
    return period, version_id


async def current_pricing(
    session: AsyncSession, customer_id: uuid.UUID, as_of: datetime
) -> tuple[Period, uuid.UUID | None, OverrideTimeline]:
    """:func:`current_period`, with the customer's price overrides (read only for a customer
    who has had one)."""
    subscription = (await customers.subscriptions_of(session, [customer_id])).get(customer_id)
    return await period_of(session, subscription, as_of)


async def current_pricings(
    session: AsyncSession, customer_id: uuid.UUID, as_of: datetime
) -> list[tuple[Period, uuid.UUID | None, OverrideTimeline]]:
    """:func:`current_pricing` of each of the customer's subscriptions, the primary one first (one
    entry, a calendar month and no plan, for a customer without any): each meter is priced by the
    subscription that charges it, in that subscription's own period."""
    subscriptions: list[Subscription | None] = [
        *(await customers.all_subscriptions_of(session, [customer_id]))[customer_id]
    ]
    return [await period_of(session, subscription, as_of) for subscription in subscriptions or [None]]


async def period_of(
    session: AsyncSession, subscription: Subscription | None, as_of: datetime
) -> tuple[Period, uuid.UUID | None, OverrideTimeline]:
    """The subscription's period at ``as_of`` (the calendar month without one), the plan version
    in effect then, and the customer's price overrides."""
    if subscription is None:
        start, end = calendar_month(as_of)
        return Period(start, end), None, NO_OVERRIDES
    version = await plan_version(session, subscription.version_at(as_of))
    period = subscription_period(subscription, version.interval, as_of)
    return Period(period.start, period.end), version.id, await overrides_of(session, subscription)


@dataclass(frozen=True)
class RatedCharge:
    """A charge rated on a meter's usage: the quantity its ``where`` selects, the exact amount,
    and that amount shared among the dimensions in proportion to their quantities (the parts add
    up to the amount exactly), dimensions in the order of their canonical JSON."""

    quantity: Decimal
    amount: Decimal
    parts: list[tuple[str, Decimal, Decimal]]  # (canonical JSON of the dimensions, quantity, share)


# Per charge rated event by event: the values its events measured, in the order they happened.
ChargeEvents = dict[uuid.UUID, list[Decimal]]


async def charge_event_values(
    session: AsyncSession,
    customer_id: uuid.UUID,
    charges: list[tuple[PlanCharge, Meter]],
    start: datetime,
    end: datetime,
    *,
    received_by: datetime | None = None,
) -> ChargeEvents:
    """The event values over ``[start, end)`` of each charge that is rated event by event (a
    percentage charge with per-event terms, :func:`pricing.rating.needs_events`), those its
    ``where`` selects; nothing is read for the other charges. With ``received_by``, only events
    received by then (what an invoice issued then could have billed). One indexed range read per
    meter: its cost grows with the customer's events of that type in the period."""
    found: ChargeEvents = {}
    by_meter: dict[uuid.UUID, list[PlanCharge]] = {}
    meters: dict[uuid.UUID, Meter] = {}
    for charge, meter in charges:
        if needs_events(charge_terms(charge)):
            by_meter.setdefault(meter.id, []).append(charge)
            meters[meter.id] = meter
            found[charge.id] = []
    for meter_id, meter_charges in by_meter.items():
        meter, rule = meters[meter_id], _rule(meters[meter_id])
        matches: dict[tuple[uuid.UUID, str], bool] = {}
        rows = repository.events_in_order(session, customer_id, meter.event_type, start, end, received_by=received_by)
        async for row in rows:
            measured = measure(loads_exact(row["properties"]), rule)
            if isinstance(measured, str) or measured.value is None:
                continue  # stored events were validated; a meter declared later may not read them
            for charge in meter_charges:
                key = (charge.id, measured.dimensions)
                if key not in matches:
                    matches[key] = not charge.where or dimensions_match(loads_exact(measured.dimensions), charge.where)
                if matches[key]:
                    found[charge.id].append(measured.value)
    return found


LEVEL_PAGE = 100  # events read at a time looking back for the last value a level source can read


@dataclass(frozen=True)
class LevelSource:
    """What an in-advance charge reads the level of: a meter's values among the events its
    ``where`` selects; ``key`` names it (:class:`pricing.advance.Reading`)."""

    key: str
    meter: Meter
    where: dict[str, str]


def level_source(meter: Meter, where: dict[str, str]) -> LevelSource:
    return LevelSource(f"{meter.id}:{canonical_json(dict(where))}", meter, dict(where))


async def levels(
    session: AsyncSession, customer_id: uuid.UUID, sources: list[LevelSource], start: datetime, end: datetime
) -> tuple[dict[str, Decimal], list[Reading]]:
    """Each source's value known at ``start`` (its last event at or before it; none: no entry) and
    its values over ``[start, end)`` in the order they happened: how seats are billed in advance
    (a latest or max meter's value is a level, read from the events themselves, never from the
    hourly rollups, which would lose the moment it rose). One indexed read per source and range."""
    known: dict[str, Decimal] = {}
    readings: list[Reading] = []
    for source in {s.key: s for s in sources}.values():
        rule = _rule(source.meter)

        def value_of(row: dict[str, Any], source: LevelSource = source, rule: MeterRule = rule) -> Decimal | None:
            measured = measure(loads_exact(row["properties"]), rule)
            if isinstance(measured, str) or measured.value is None:
                return None  # stored events were validated; a meter declared later may not read them
            if source.where and not dimensions_match(loads_exact(measured.dimensions), source.where):
                return None
            return measured.value

        # A value read at the very moment counts as known then: the keyset starts just after it.
        before = (start + timedelta(microseconds=1), "")
        while source.key not in known:
            page = await repository.events_before_newest_first(
                session, customer_id, source.meter.event_type, before, limit=LEVEL_PAGE
            )
            for row in page:
                if (value := value_of(row)) is not None:
                    known[source.key] = value
                    break
            if len(page) < LEVEL_PAGE:
                break
            before = (page[-1]["occurred_at"], page[-1]["event_id"])
        async for row in repository.events_in_order(session, customer_id, source.meter.event_type, start, end):
            if (value := value_of(row)) is not None:
                readings.append(Reading(row["occurred_at"], source.key, value))
    return known, readings


def rate_charge(
    meter_usage: MeterUsage,
    charge: PlanCharge,
    terms: ChargeTerms | None = None,
    event_values: list[Decimal] | None = None,
) -> RatedCharge:
    """``event_values`` (:func:`charge_event_values`) are required for a charge rated event by
    event; other charges are rated on the quantity."""
    where = dict(charge.where)
    quantity = meter_usage.quantity(where)
    terms = terms or charge_terms(charge)
    if needs_events(terms):
        if event_values is None:
            raise ValueError(f"charge {charge.id} is rated from its events; read them with charge_event_values")
        amount = rate_events(terms, event_values)
    else:
        amount = rate(terms, quantity)
    # In one order whatever order the usage was read in (rollups and raw events differ): the last
    # part takes the remainder of the split, so the order decides the twelfth decimal of each share.
    covered = sorted(d for d in meter_usage.by_dimensions if not where or dimensions_match(loads_exact(d), where))
    weights = [meter_usage.by_dimensions[d].quantity(meter_usage.meter.aggregation) for d in covered]
    return RatedCharge(quantity, amount, list(zip(covered, weights, allocate(amount, weights), strict=True)))


@dataclass(frozen=True)
class UsageCost:
    """The exact cost of a meter's usage under a plan, in total and by dimensions."""

    total: Decimal
    by_dimensions: dict[str, Decimal]


def cost_of(meter_usage: MeterUsage, charges: list[PlanCharge], events: ChargeEvents | None = None) -> UsageCost:
    total = Decimal(0)
    by_dimensions = dict.fromkeys(meter_usage.by_dimensions, Decimal(0))
    for charge in charges:
        rated = rate_charge(meter_usage, charge, event_values=(events or {}).get(charge.id))
        total += rated.amount
        for dimensions, _, share in rated.parts:
            by_dimensions[dimensions] += share
    return UsageCost(total, by_dimensions)


async def hours_with_usage(
    session: AsyncSession, customer_id: uuid.UUID, meter_id: uuid.UUID, start: datetime, end: datetime
) -> dict[str, int]:
    """How many hours wholly inside ``[start, end)`` have usage of the meter, by canonical
    dimensions text: usage rolled up or still waiting for the roller, as every usage read counts it."""
    rows = await repository.usage_hours(session, customer_id, meter_id, start, end)
    return {canonical_json(loads_exact(row["dimensions"])): int(row["hours"]) for row in rows}


async def watermark(session: AsyncSession, customer_id: uuid.UUID) -> datetime | None:
    """Usage is complete through this event time: the latest one counted for the customer."""
    return await repository.watermark_of(session, customer_id)
