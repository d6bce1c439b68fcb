"""GraphQL of invoice provenance ("why this amount?"): resolved only for the line asked about,
never for list pages, since it reads rollups and raw events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

import strawberry
from strawberry.scalars import JSON

from billing.invoices import provenance


@strawberry.type
class ProvenanceEvent:
    event_id: str
    occurred_at: datetime
    received_at: datetime
    trace_id: str | None = strawberry.field(description="The trace that ingested the event (Traces page).")


@strawberry.type
class ProvenanceEvents:
    count: int
    quantity: Decimal | None = strawberry.field(description="What the events measure; count and sum meters only.")
    first_event_at: datetime | None
    last_event_at: datetime | None
    samples: list[ProvenanceEvent] = strawberry.field(description="The first few events in time.")

    @classmethod
    def from_model(cls, found: provenance.EventSummary) -> ProvenanceEvents:
        return cls(
            count=found.count,
            quantity=found.quantity,
            first_event_at=found.first_at,
            last_event_at=found.last_at,
            samples=[ProvenanceEvent(**sample.__dict__) for sample in found.samples],
        )


@strawberry.type
class ProvenanceRollup:
    dimensions: JSON
    hours: int = strawberry.field(description="Hours of hourly rollups wholly inside the service period.")
    event_count: int
    quantity: Decimal


@strawberry.type
class UsageProvenance:
    meter_key: str
    meter_name: str
    unit: str
    aggregation: str
    where: JSON = strawberry.field(description="The charge's filter on dimensions, if any.")
    service_start: datetime
    service_end: datetime
    rollups: list[ProvenanceRollup] = strawberry.field(description="By dimensions, with every arrival so far.")
    rollup_quantity: Decimal
    received_after: datetime | None = strawberry.field(
        description="Late usage: when the period was last billed; the line bills events received after it."
    )
    received_by: datetime = strawberry.field(description="The invoice's issue: later events are billed later.")
    events: ProvenanceEvents = strawberry.field(description="The raw events received in the line's window.")
    previously_billed: Decimal | None = strawberry.field(description="Late usage: what earlier invoices billed.")
    arrived_later: int = strawberry.field(description="Events of the period received after this invoice.")

    @classmethod
    def from_model(cls, found: provenance.UsageProvenance) -> UsageProvenance:
        return cls(
            meter_key=found.meter.key,
            meter_name=found.meter.name,
            unit=found.meter.unit,
            aggregation=found.meter.aggregation,
            where=cast(JSON, found.where),
            service_start=found.start,
            service_end=found.end,
            rollups=[
                ProvenanceRollup(
                    dimensions=cast(JSON, group.dimensions),
                    hours=group.hours,
                    event_count=group.event_count,
                    quantity=group.quantity,
                )
                for group in found.rollups
            ],
            rollup_quantity=found.rollup_quantity,
            received_after=found.received_after,
            received_by=found.received_by,
            events=ProvenanceEvents.from_model(found.events),
            previously_billed=found.previously_billed,
            arrived_later=found.arrived_later,
        )


@strawberry.type
class PlanProvenance:
    plan_key: str
    plan_name: str
    version: int
    base_fee: Decimal
    service_start: datetime
    service_end: datetime
    share_of_period: Decimal | None = strawberry.field(
        description="Base fees and prorations: the share of the billing period the line covers (0 to 1)."
    )


@strawberry.type
class InvoiceLineProvenance:
    summary: str
    plan: PlanProvenance | None = strawberry.field(description="The plan version that priced the line.")
    usage: UsageProvenance | None = strawberry.field(description="Usage and late-usage lines.")

    @classmethod
    def from_model(cls, found: provenance.LineProvenance) -> InvoiceLineProvenance:
        plan = found.plan
        return cls(
            summary=found.summary,
            plan=PlanProvenance(
                plan_key=plan.plan_key,
                plan_name=plan.plan_name,
                version=plan.version,
                base_fee=plan.base_fee,
                service_start=plan.start,
                service_end=plan.end,
                share_of_period=plan.share,
            )
            if plan
            else None,
            usage=UsageProvenance.from_model(found.usage) if found.usage else None,
        )
