"""GraphQL of metering: ingestion, a customer's usage, usage series and entitlements."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, cast

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.catalog import Meter
from app.api.common import Money, UserError, page_size, run_mutation
from app.api.permissions import requires
from app.auth import Capability
from app.usage_ingest import ingest_and_commit, ingest_limits
from ledger.money import plain_decimal, round_to_minor, to_major
from metering import entitlements
from metering import service as metering
from metering import usage as usage_service
from metering.errors import UnknownMeter
from metering.events import json_size
from metering.log_backlog import LogBacklog, LogState, read_backlog
from pricing.models import Meter as MeterModel
from pricing.models import PlanCharge
from pricing.service import charges_of_version, list_meters, meter_by_key


def money(amount: Decimal, currency: str) -> Money:
    """A preview amount shown as a payable one: rounded by the one rounding rule of the ledger."""
    return Money(amount=to_major(round_to_minor(amount, currency), currency), currency=currency)


@strawberry.input
class UsageEventInput:
    id: str
    customer: str
    type: str
    timestamp: datetime
    properties: JSON | None = None
    authorization: strawberry.ID | None = strawberry.field(
        default=None, description="The usage authorization this event uses: ingesting the event settles it."
    )


@strawberry.type(description="An event of the batch that was not ingested, and why; the others were.")
class EventRejection:
    index: int = strawberry.field(description="Its position in the batch sent, from 0.")
    code: str = strawberry.field(
        description="Machine-readable: INVALID_EVENT, INVALID_VALUE, TIMESTAMP_OUT_OF_RANGE, UNKNOWN_CUSTOMER…"
    )
    message: str = strawberry.field(description="What is wrong with it, naming the field.")


@strawberry.type(description="What became of a batch of usage events.")
class IngestUsagePayload:
    accepted: int = strawberry.field(description="Events new to Tally, now counted (each exactly once).")
    duplicates: int = strawberry.field(
        description="Events whose id Tally already had: counted before, not again (a retry is safe)."
    )
    rejected: list[EventRejection] = strawberry.field(description="Events refused, each with its position and why.")
    user_errors: list[UserError] = strawberry.field(
        description="Why the whole batch was refused (too many events, or too large): nothing was ingested."
    )


@strawberry.type(description="A meter's usage for one combination of its dimensions (e.g. one model).")
class DimensionUsage:
    dimensions: JSON = strawberry.field(description='The dimension values, e.g. {"model": "fast-1"}.')
    quantity: Decimal = strawberry.field(description="The meter's quantity for these values in the range.")
    cost: Money = strawberry.field(description="What this share costs under the customer's prices, before credits.")


@strawberry.type(description="A meter's usage in a range, priced under the customer's plan.")
class MeterUsage:
    meter: Meter = strawberry.field(description="The meter measured.")
    quantity: Decimal = strawberry.field(
        description="Usage in the range, by the meter's aggregation (count, sum, max, unique count, latest); "
        "events still waiting for the roller included."
    )
    included: Decimal = strawberry.field(description="The plan's allowance: this much costs nothing.")
    limit: Decimal | None = strawberry.field(description="The plan's hard limit; null without one.")
    remaining: Decimal | None = strawberry.field(description="What the limit leaves (limit - quantity, at least 0).")
    cost: Money = strawberry.field(description="What the usage costs under the customer's prices, before credits.")
    by_dimension: list[DimensionUsage] = strawberry.field(description="The same, split by the meter's dimensions.")


@strawberry.enum
class Granularity(Enum):
    HOUR = "HOUR"
    DAY = "DAY"


@strawberry.type(description="One bucket of a usage series.")
class UsagePoint:
    start: datetime = strawberry.field(description="When the bucket (an hour or a UTC day) begins.")
    quantity: Decimal = strawberry.field(description="The meter's usage in the bucket.")


@strawberry.type(
    description="Whether a customer may use more of a meter now: a read that holds nothing (see `authorize`)."
)
class Entitlement:
    allowed: bool = strawberry.field(description="True when used < limit, or there is no limit.")
    used: Decimal = strawberry.field(description="Usage of the meter in the current billing period.")
    limit: Decimal | None = strawberry.field(description="The plan's hard limit; null without one.")
    remaining: Decimal | None = strawberry.field(description="limit - used, at least 0; null without a limit.")
    reason: str | None = strawberry.field(
        default=None,
        description="Why not allowed: SUBSCRIPTION_CANCELED, SUBSCRIPTION_PAUSED, CUSTOMER_SUSPENDED or "
        "LIMIT_REACHED; null when allowed.",
    )

    @classmethod
    def from_result(cls, found: entitlements.Entitlement) -> Entitlement:
        return cls(
            allowed=found.allowed, used=found.used, limit=found.limit, remaining=found.remaining, reason=found.reason
        )


def _exact_json(value: Any, depth: int) -> Any:
    """GraphQL variables arrive through a float-reading JSON parser: give floats back their
    shortest exact decimal text (send decimal strings for full control); NaN and Infinity become
    Decimal's own, which ingestion refuses event by event. Goes no deeper than ``depth``: deeper
    properties are refused for their nesting before anything reads their values."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if depth <= 0:
        return value
    if isinstance(value, dict):
        return {key: _exact_json(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_exact_json(item, depth - 1) for item in value]
    return value


async def resolve_usage(
    root: strawberry.Parent[Any],
    info: Info,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
) -> list[MeterUsage]:
    """Usage of each meter the customer's plans charge (every meter without a plan), over the
    current billing period of the subscription charging it unless ``from``/``to`` say otherwise."""
    session = info.context.session
    results: list[MeterUsage] = []
    every_meter = {meter.id: meter for meter in await list_meters(session)}  # fresh names and units
    shown: set[uuid.UUID] = set()
    pricings = await usage_service.current_pricings(session, root.row_id, info.context.now())
    for position, (period, version_id, overrides) in enumerate(pricings):
        start, end = from_ or period.start, to or period.end
        usage_service.check_range(start, end)
        # At the customer's prices now (an override's limit, allowance and price).
        charged = [
            (overrides.charge_at(charge, info.context.now()), meter)
            for charge, meter in (await charges_of_version(session, version_id) if version_id else [])
            if meter.id not in shown
        ]
        if not charged and position > 0:
            continue  # another subscription's meters are shown with it; every meter only without a plan
        meters = list({m.id: every_meter[m.id] for _, m in charged}.values()) if charged else list(every_meter.values())
        shown |= {meter.id for meter in meters}
        results += await _usage_of(session, root, info, charged, meters, start, end)
    return results


async def _usage_of(
    session: AsyncSession,
    root: Any,
    info: Info,
    charged: list[tuple[PlanCharge, MeterModel]],
    meters: list[MeterModel],
    start: datetime,
    end: datetime,
) -> list[MeterUsage]:
    currency = root.currency
    results = []
    now = info.context.now()
    events = await usage_service.charge_event_values(session, root.row_id, charged, start, end)
    for meter_usage in await usage_service.usage(session, root.row_id, meters, start, end, as_of=now):
        charges: list[PlanCharge] = [c for c, m in charged if m.id == meter_usage.meter.id]
        limits = entitlements.entitlement_of(meter_usage, charges, suspended=False)
        cost = usage_service.cost_of(meter_usage, charges, events)
        aggregation = meter_usage.meter.aggregation
        results.append(
            MeterUsage(
                meter=Meter.from_model(meter_usage.meter),
                quantity=plain_decimal(meter_usage.quantity()),
                included=plain_decimal(sum((c.included for c in charges), Decimal(0))),
                limit=limits.limit,
                remaining=limits.remaining,
                cost=money(cost.total, currency),
                by_dimension=[
                    DimensionUsage(
                        dimensions=cast(JSON, json.loads(dimensions)),
                        quantity=plain_decimal(partial.quantity(aggregation)),
                        cost=money(cost.by_dimensions[dimensions], currency),
                    )
                    for dimensions, partial in sorted(meter_usage.by_dimensions.items())
                ],
            )
        )
    return results


async def resolve_usage_series(
    root: strawberry.Parent[Any],
    info: Info,
    meter: str,
    from_: Annotated[datetime, strawberry.argument(name="from")],
    to: datetime,
    granularity: Granularity,
) -> list[UsagePoint] | None:
    """Null, with a coded error (``UNKNOWN_METER``, ``INVALID_RANGE``, ``TOO_MANY_POINTS``), when
    the arguments are refused: the customer around it still answers."""
    session = info.context.session
    found = await meter_by_key(session, meter)
    if found is None:
        raise UnknownMeter(meter)
    usage_service.check_series_range(from_, to, granularity.value)
    points = await usage_service.usage_series(session, root.row_id, found, from_, to, granularity.value)
    return [UsagePoint(start=p.start, quantity=p.quantity) for p in points]


async def resolve_entitlement(root: strawberry.Parent[Any], info: Info, meter: str) -> Entitlement | None:
    """Null with an ``UNKNOWN_METER`` error for a meter the catalog does not have."""
    found = await entitlements.entitlement(
        info.context.session, root.row_id, meter, suspended=root.status.value == "SUSPENDED", as_of=info.context.now()
    )
    if found is None:
        raise UnknownMeter(meter)
    return Entitlement.from_result(found)


async def resolve_usage_watermark(root: strawberry.Parent[Any], info: Info) -> datetime | None:
    """Usage is complete through this time: the latest event time counted for the customer."""
    return await usage_service.watermark(info.context.session, root.row_id)


@strawberry.type
class MeteringMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.INGEST_USAGE)],
        description="Send usage events, as `POST /v1/events` does: each is counted once by its id (a retried "
        "batch counts nothing twice), valid events are kept and each invalid one is answered in `rejected`.",
    )
    async def ingest_usage(self, info: Info, events: list[UsageEventInput]) -> IngestUsagePayload:
        """The same ingestion as `POST /v1/events`: per-event results, valid events kept, and the
        same limits on a batch (too many events, or too many bytes of them as JSON, refuse it
        whole with a `userErrors` entry)."""
        settings = info.context.settings
        if len(events) > settings.events_max_per_request:
            return _refused(
                "TOO_MANY_EVENTS", f"at most {settings.events_max_per_request} events a request; split the batch"
            )
        depth = settings.event_properties_max_depth + 1
        items = [
            {
                "id": event.id,
                "customer": event.customer,
                "type": event.type,
                "timestamp": event.timestamp.isoformat(),
                "properties": _exact_json(event.properties, depth) if event.properties is not None else {},
                **({"authorization": str(event.authorization)} if event.authorization is not None else {}),
            }
            for event in events
        ]
        if json_size(items) > settings.events_max_body_bytes:
            return _refused(
                "BODY_TOO_LARGE", f"the events exceed {settings.events_max_body_bytes} bytes; send smaller batches"
            )
        result = await ingest_and_commit(info.context.session, items, settings)
        return IngestUsagePayload(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[EventRejection(index=r.index, code=r.code, message=r.message) for r in result.rejected],
            user_errors=[],
        )


def _refused(code: str, message: str) -> IngestUsagePayload:
    return IngestUsagePayload(
        accepted=0, duplicates=0, rejected=[], user_errors=[UserError(field=["events"], code=code, message=message)]
    )


@strawberry.type
class CodeCount:
    code: str
    count: int


@strawberry.type
class WatermarkRow:
    customer_external_id: str
    watermark: datetime
    last_received_at: datetime


strawberry.enum(
    LogState,
    name="EventLogState",
    description="Whether the event log's backlog could be read: NOT_IN_USE without TALLY_NATS_URL (events go "
    "straight to PostgreSQL), UNREACHABLE when the log did not answer within a second.",
)


@strawberry.type(description="One partition (subject) of the event log: what it holds that is not counted yet.")
class EventLogPartition:
    partition: int
    subject: str
    pending: int = strawberry.field(
        description="Messages not yet counted in PostgreSQL (each one edge request's share of this partition)."
    )
    oldest_pending_at: datetime | None = strawberry.field(description="When the log stored the oldest of them.")
    oldest_pending_age_ms: Decimal | None = strawberry.field(description="How long the oldest of them has waited.")


@strawberry.type(
    description="The event log's backlog (edge mode): events the edges acknowledged that usage does not include yet."
)
class EventLogBacklog:
    state: LogState
    pending: int = strawberry.field(description="Messages not yet counted, over every partition (0 unless READ).")
    oldest_pending_age_ms: Decimal | None = strawberry.field(
        description="How long the oldest message not yet counted has waited in the log, over every partition."
    )
    partitions: list[EventLogPartition] = strawberry.field(description="One row a partition when READ, else none.")

    @classmethod
    def from_backlog(cls, backlog: LogBacklog) -> EventLogBacklog:
        def age_ms(age: timedelta | None) -> Decimal | None:
            return None if age is None else _ms(age / timedelta(milliseconds=1))

        return cls(
            state=backlog.state,
            pending=backlog.pending,
            oldest_pending_age_ms=age_ms(backlog.oldest_pending_age()),
            partitions=[
                EventLogPartition(
                    partition=p.partition,
                    subject=p.subject,
                    pending=p.pending,
                    oldest_pending_at=p.oldest_pending_at,
                    oldest_pending_age_ms=age_ms(p.oldest_pending_age(backlog.read_at)),
                )
                for p in backlog.partitions
            ],
        )


@strawberry.type
class MeteringOverview:
    since: datetime
    batches: int
    accepted: int
    duplicates: int
    accepted_per_second: Decimal
    rejected_by_code: list[CodeCount]
    ingest_lag_p50_ms: Decimal | None
    ingest_lag_p99_ms: Decimal | None
    processing_p50_ms: Decimal | None
    processing_p99_ms: Decimal | None
    oldest_watermarks: list[WatermarkRow]
    quarantined: int
    waiting_to_roll_up: int = strawberry.field(
        description="Counted measurements the roller has not folded into the rollups yet (usage includes them)."
    )
    roll_up_lag_ms: Decimal | None = strawberry.field(description="How long the oldest of them has waited.")
    event_log: EventLogBacklog = strawberry.field(
        description="The event log's backlog per partition, before PostgreSQL (usage excludes it); the lag a user "
        "sees is its oldest age plus the roller's."
    )


@strawberry.type
class MeteringHistoryPoint:
    start: datetime
    accepted: int
    duplicates: int
    rejected: int
    ingest_lag_p50_ms: Decimal | None = strawberry.field(description="Median of the bucket's batch medians.")
    ingest_lag_p99_ms: Decimal | None = strawberry.field(description="99th percentile of the batch maxima.")
    processing_p99_ms: Decimal | None


@strawberry.type
class WatermarkSnapshot:
    taken_at: datetime
    active_customers: int = strawberry.field(description="Customers who sent events in the hour before.")
    watermark_age_p50_ms: int | None = strawberry.field(description="How far behind now their usage is complete.")
    watermark_age_max_ms: int | None
    quarantined: int


@strawberry.type
class MeteringHistory:
    points: list[MeteringHistoryPoint]
    watermarks: list[WatermarkSnapshot]


@strawberry.type
class QuarantinedEvent:
    event_id: str
    code: str
    message: str
    payload: JSON
    received_at: datetime


@strawberry.input
class ReplayQuarantineInput:
    limit: int = 1000


@strawberry.type
class ReplayQuarantinePayload:
    accepted: int
    duplicates: int
    still_waiting: int
    rejected: int
    user_errors: list[UserError]


def _ms(value: float | None) -> Decimal | None:
    return Decimal(str(round(value, 1))) if value is not None else None


@strawberry.type
class MeteringQuery:
    @strawberry.field(permission_classes=[requires(Capability.READ_METERING)])
    async def metering_overview(self, info: Info, since: datetime | None = None) -> MeteringOverview:
        """Ingestion since ``since`` (default: the last hour)."""
        until = info.context.now()
        found, log_backlog = await asyncio.gather(
            metering.overview(info.context.session, since=since or until - timedelta(hours=1), until=until),
            read_backlog(info.context.event_log, as_of=until),
        )
        return MeteringOverview(
            since=found.since,
            batches=found.batches,
            accepted=found.accepted,
            duplicates=found.duplicates,
            accepted_per_second=Decimal(str(round(found.accepted_per_second, 1))),
            rejected_by_code=[CodeCount(code=c, count=n) for c, n in found.rejected_by_code.items()],
            ingest_lag_p50_ms=_ms(found.ingest_lag_p50_ms),
            ingest_lag_p99_ms=_ms(found.ingest_lag_p99_ms),
            processing_p50_ms=_ms(found.processing_p50_ms),
            processing_p99_ms=_ms(found.processing_p99_ms),
            oldest_watermarks=[
                WatermarkRow(customer_external_id=e, watermark=w, last_received_at=r)
                for e, w, r in found.oldest_watermarks
            ],
            quarantined=found.quarantined,
            waiting_to_roll_up=found.waiting_to_roll_up,
            roll_up_lag_ms=None
            if found.waiting_since is None
            else _ms(max((until - found.waiting_since) / timedelta(milliseconds=1), 0.0)),
            event_log=EventLogBacklog.from_backlog(log_backlog),
        )

    @strawberry.field(permission_classes=[requires(Capability.READ_METERING)])
    async def metering_history(
        self, info: Info, since: datetime | None = None, bucket_minutes: int = 60
    ) -> MeteringHistory:
        """Ingestion volumes and lag percentiles per bucket since ``since`` (default: the last 24
        hours), and the watermark snapshots taken meanwhile: for charts."""
        until = info.context.now()
        start = since or until - timedelta(hours=24)
        points, watermarks = await metering.history(
            info.context.session, since=start, until=until, bucket=timedelta(minutes=bucket_minutes)
        )
        return MeteringHistory(
            points=[
                MeteringHistoryPoint(
                    start=p.start,
                    accepted=p.accepted,
                    duplicates=p.duplicates,
                    rejected=p.rejected,
                    ingest_lag_p50_ms=_ms(p.ingest_lag_p50_ms),
                    ingest_lag_p99_ms=_ms(p.ingest_lag_p99_ms),
                    processing_p99_ms=_ms(p.processing_p99_ms),
                )
                for p in points
            ],
            watermarks=[
                WatermarkSnapshot(
                    taken_at=w.taken_at,
                    active_customers=w.active_customers,
                    watermark_age_p50_ms=w.watermark_age_p50_ms,
                    watermark_age_max_ms=w.watermark_age_max_ms,
                    quarantined=w.quarantined,
                )
                for w in watermarks
            ],
        )

    @strawberry.field(permission_classes=[requires(Capability.READ_METERING)])
    async def quarantined_events(self, info: Info, first: int | None = None) -> list[QuarantinedEvent]:
        """Events waiting for their customer or meter to exist, newest first."""
        limit = page_size(first, default=50, maximum=info.context.settings.page_size_max)
        return [
            QuarantinedEvent(
                event_id=row.event_id,
                code=row.code,
                message=row.message,
                payload=cast(JSON, json.loads(json.dumps(row.payload, default=str))),
                received_at=row.received_at,
            )
            for row in await metering.quarantined(info.context.session, limit=limit)
        ]


@strawberry.type
class QuarantineMutation:
    @strawberry.mutation(permission_classes=[requires(Capability.MANAGE_QUARANTINE)])
    async def replay_quarantine(self, info: Info, input: ReplayQuarantineInput) -> ReplayQuarantinePayload:
        """Send quarantined events through ingestion again, now that customers or meters exist."""
        settings = info.context.settings
        report, errors = await run_mutation(
            info,
            lambda: metering.replay_quarantine(
                info.context.session, limits=ingest_limits(settings), batch_size=input.limit
            ),
        )
        if report is None:
            return ReplayQuarantinePayload(accepted=0, duplicates=0, still_waiting=0, rejected=0, user_errors=errors)
        return ReplayQuarantinePayload(
            accepted=report.accepted,
            duplicates=report.duplicates,
            still_waiting=report.still_waiting,
            rejected=report.rejected,
            user_errors=errors,
        )
