"""GraphQL of anomalies: the list finance works through, and acknowledging and resolving."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from app.api.common import (
    Connection,
    UserError,
    connection,
    decode_cursor,
    encode_cursor,
    not_a_cursor,
    page_size,
    run_mutation,
)
from app.api.customers import Customer
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, load_visible_customer, staff_only
from app.auth import Capability
from billing.insights import anomalies as service
from billing.models import Anomaly as AnomalyRow
from ledger.errors import NotFound


@strawberry.enum(
    description="What a finding is about: the ledger, usage, invoices, metering, reconciliation, Stripe or webhooks "
    "(docs/architecture.md lists how each is detected)."
)
class AnomalyKind(Enum):
    LEDGER_INVARIANT = "LEDGER_INVARIANT"
    USAGE_SPIKE = "USAGE_SPIKE"
    INVOICE_DELTA = "INVOICE_DELTA"
    ZERO_USAGE_ACTIVE = "ZERO_USAGE_ACTIVE"
    DUPLICATE_RATE = "DUPLICATE_RATE"
    QUARANTINE = "QUARANTINE"
    METERING_LAG = "METERING_LAG"
    LATE_USAGE = "LATE_USAGE"
    UNRECONCILED = "UNRECONCILED"
    DISPUTE = "DISPUTE"
    INVOICE_ACCURACY = "INVOICE_ACCURACY"
    BILLING_FAILED = "BILLING_FAILED"
    WEBHOOK_ENDPOINT_DISABLED = "WEBHOOK_ENDPOINT_DISABLED"


@strawberry.enum(description="How soon a person should look: critical and high first.")
class AnomalySeverity(Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@strawberry.enum
class AnomalyStatus(Enum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@strawberry.type(description="A finding of the anomaly scans that a person should look at (finance, engineers).")
class Anomaly:
    id: strawberry.ID
    kind: AnomalyKind = strawberry.field(description="What it is about.")
    severity: AnomalySeverity = strawberry.field(description="How soon to look.")
    status: AnomalyStatus = strawberry.field(description="Open, acknowledged (someone is on it) or resolved.")
    detected_at: datetime = strawberry.field(description="When a scan first found it.")
    summary: str = strawberry.field(description="One line, naming the numbers.")
    numbers: str = strawberry.field(
        description="The numbers behind it, as JSON text: amounts in minor units beside their currency, "
        "quantities and ratios as decimal strings."
    )
    window_start: datetime = strawberry.field(description="What time it is about, half-open.")
    window_end: datetime
    note: str | None = strawberry.field(description="Why it was resolved.")
    status_by: str | None = staff_only("Who acknowledged or resolved it. " + STAFF_ONLY)
    status_at: datetime | None
    customer_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The customer it is about; null for Tally-wide ones (ledger, edge, quarantine).")
    async def customer(self, info: Info) -> Customer | None:
        if self.customer_id is None:
            return None
        row = await load_visible_customer(info, self.customer_id)
        return Customer.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: AnomalyRow) -> Anomaly:
        return cls(
            id=strawberry.ID(str(row.id)),
            kind=AnomalyKind(row.kind),
            severity=AnomalySeverity(row.severity),
            status=AnomalyStatus(row.status),
            detected_at=row.detected_at,
            summary=row.summary,
            numbers=json.dumps(row.numbers, sort_keys=True),
            window_start=row.window_start,
            window_end=row.window_end,
            note=row.note,
            status_by=row.status_by,
            status_at=row.status_at,
            customer_id=row.customer_id,
        )


def _position(after: str | None) -> tuple[int, datetime, uuid.UUID] | None:
    if after is None:
        return None
    values = decode_cursor(after)
    try:
        return int(values[0]), datetime.fromisoformat(values[1]), uuid.UUID(values[2])
    except (IndexError, TypeError, ValueError):
        raise not_a_cursor() from None


@strawberry.type
class AnomaliesQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_ANOMALIES)],
        description="Anomalies detected since `since` (and before `until`): ledger invariants first, then "
        "critical ones, then newest first.",
    )
    async def anomalies(
        self,
        info: Info,
        since: datetime,
        first: int | None = None,
        after: str | None = None,
        kind: AnomalyKind | None = None,
        severity: AnomalySeverity | None = None,
        status: AnomalyStatus | None = None,
        until: datetime | None = None,
    ) -> Connection[Anomaly]:
        limit = page_size(first, default=50, maximum=info.context.settings.page_size_max)
        selection = service.AnomalyFilter(
            since=since,
            until=until,
            kind=kind.value if kind else None,
            severity=severity.value if severity else None,
            status=status.value if status else None,
        )
        rows = await service.anomalies(info.context.session, selection, after=_position(after), limit=limit + 1)
        return connection(
            rows,
            limit,
            lambda found: Anomaly.from_model(found[0]),
            lambda found: encode_cursor(found[1], found[0].detected_at.isoformat(), str(found[0].id)),
        )


@strawberry.input
class AcknowledgeAnomalyInput:
    anomaly_id: strawberry.ID


@strawberry.input
class ResolveAnomalyInput:
    anomaly_id: strawberry.ID
    note: str = strawberry.field(description="What was found or done; required.")


@strawberry.type
class AnomalyPayload:
    anomaly: Anomaly | None
    user_errors: list[UserError]


def _anomaly_id(value: strawberry.ID) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("no such anomaly", field="anomalyId") from None


@strawberry.type
class AnomaliesMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_ANOMALIES)],
        description="Say someone is looking into an anomaly (finance). Acknowledging twice changes nothing.",
    )
    async def acknowledge_anomaly(self, info: Info, input: AcknowledgeAnomalyInput) -> AnomalyPayload:
        context = info.context
        row, errors = await run_mutation(
            info,
            lambda: service.acknowledge(
                context.session, _anomaly_id(input.anomaly_id), actor=context.viewer.actor, as_of=context.now()
            ),
        )
        return AnomalyPayload(anomaly=Anomaly.from_model(row) if row else None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_ANOMALIES)],
        description="Close an anomaly with a note saying what was found or done (finance); final.",
    )
    async def resolve_anomaly(self, info: Info, input: ResolveAnomalyInput) -> AnomalyPayload:
        context = info.context
        row, errors = await run_mutation(
            info,
            lambda: service.resolve(
                context.session,
                _anomaly_id(input.anomaly_id),
                note=input.note,
                actor=context.viewer.actor,
                as_of=context.now(),
            ),
        )
        return AnomalyPayload(anomaly=Anomaly.from_model(row) if row else None, user_errors=errors)
