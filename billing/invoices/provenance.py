"""Why an invoice line has its amount: what fed it, down to the rollups and the raw events.

A usage line bills the meter's quantity over its service period for its customer and dimensions
(within its charge's ``where``), as it stood when the invoice was issued. A late-usage line bills
what a period gained after it was last billed: the period re-rated, less what earlier invoices
billed of the same charge and dimensions. A usage line of a period whose interim invoices
(threshold invoicing) billed part of it says what they billed before it. So for an additive
meter (count, sum):

- usage line: the events received by the invoice's issue add up to the line's quantity;
- late-usage line: the events received after the period was last billed and by this invoice's
  issue add up to it, and the rollups' quantity less what was billed before (less what arrived
  after this invoice) is it too.

The rollups are read as they stand now (they hold every arrival); the events are read in the
line's window of arrival. A base fee or a proration is explained by its plan version, its service
period and the share of the billing period it covers. Read-only; nothing is written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import provenance_repository as repository
from billing.models import Invoice, InvoiceLine
from ledger.money import plain_decimal
from metering.aggregation import merge_all
from metering.events import canonical_json, loads_exact
from metering.usage import dimensions_match, hours_with_usage, usage
from pricing.models import Meter, PlanCharge
from pricing.proration import share_of_period
from pricing.service import charges_of_version, plan_of_version, plan_version

SAMPLE_EVENTS = 5
# The keyed amounts (advance_charge_bills.kind) behind each line kind of a charge billed in advance.
ADVANCE_LINE_KINDS = {"advance": ("advance",), "advance_proration": ("top_up", "credit", "charge")}


@dataclass(frozen=True)
class SampleEvent:
    event_id: str
    occurred_at: datetime
    received_at: datetime
    trace_id: str | None


@dataclass(frozen=True)
class EventSummary:
    """Raw events in a window of arrival; ``quantity`` only for additive meters."""

    count: int
    quantity: Decimal | None
    first_at: datetime | None
    last_at: datetime | None
    samples: list[SampleEvent]


@dataclass(frozen=True)
class RollupGroup:
    """One combination of dimensions: whole hours from the rollups, partial hours at the period's
    edges from the raw events, merged as billing merges them."""

    dimensions: dict[str, Any]
    hours: int
    event_count: int
    quantity: Decimal


@dataclass(frozen=True)
class UsageProvenance:
    meter: Meter
    where: dict[str, str]
    start: datetime
    end: datetime
    rollups: list[RollupGroup]
    rollup_quantity: Decimal  # the meter's quantity over every group, with every arrival so far
    received_after: datetime | None  # the line's window of arrival: (received_after, received_by]
    received_by: datetime
    events: EventSummary  # the events received in that window: what this line billed
    # Late usage: what earlier invoices billed of the period; usage: what its interim invoices did.
    previously_billed: Decimal | None
    arrived_later: int  # events of the period received after this invoice (billed later, as late usage)


@dataclass(frozen=True)
class PlanProvenance:
    plan_key: str
    plan_name: str
    version: int
    base_fee: Decimal
    start: datetime
    end: datetime
    share: Decimal | None  # of the billing period the line covers (base fees, prorations)


@dataclass(frozen=True)
class LineProvenance:
    invoice: Invoice
    line: InvoiceLine
    plan: PlanProvenance | None
    usage: UsageProvenance | None

    @property
    def summary(self) -> str:
        """One sentence for people: what the line's quantity or amount stands on."""
        if self.usage is not None:
            found = self.usage
            unit = found.meter.unit
            text = f"{found.events.count} event(s) of {found.meter.key}"
            if found.events.quantity is not None and found.meter.aggregation != "count":
                text += f" measuring {plain_decimal(found.events.quantity)} {unit}"
            if found.previously_billed is not None and self.line.kind == "usage":
                text += f" ({plain_decimal(found.previously_billed)} of it billed by earlier interim invoices)"
            elif found.previously_billed is not None:
                text += f" arrived after the period was billed ({plain_decimal(found.previously_billed)} billed before)"
            return text + f", over {sum(g.hours for g in found.rollups)} rollup hour(s)"
        if self.plan is not None:
            share = f"{self.plan.share * 100:.2f}% of the period" if self.plan.share is not None else "the period"
            return f"{self.plan.plan_name} v{self.plan.version}, {share}"
        return "nothing recorded to explain this line"


async def explain_line(session: AsyncSession, invoice: Invoice, line: InvoiceLine) -> LineProvenance:
    plan = await _plan_provenance(session, invoice, line) if line.plan_version_id else None
    found = None
    if line.kind in ("usage", "late_usage") and line.plan_charge_id and line.plan_version_id:
        found = await _usage_provenance(session, invoice, line)
    return LineProvenance(invoice, line, plan, found)


async def _plan_provenance(session: AsyncSession, invoice: Invoice, line: InvoiceLine) -> PlanProvenance:
    assert line.plan_version_id is not None
    version = await plan_version(session, line.plan_version_id)
    plan = await plan_of_version(session, line.plan_version_id)
    share = None
    if line.kind == "base_fee":
        share = Decimal(1)  # billed in advance for a whole period of the plan
    elif line.kind == "proration":
        share = share_of_period(
            line.service_start, line.service_end, invoice.period_start, invoice.period_end, version.proration
        )
    elif line.kind in ADVANCE_LINE_KINDS and line.plan_charge_id is not None:
        share = await repository.advance_share(
            session, invoice.id, line.plan_charge_id, line.service_start, ADVANCE_LINE_KINDS[line.kind]
        )
    return PlanProvenance(
        plan_key=plan.key,
        plan_name=plan.name,
        version=version.version,
        base_fee=plain_decimal(version.base_fee),
        start=line.service_start,
        end=line.service_end,
        share=share,
    )


async def _charge(session: AsyncSession, version_id: uuid.UUID, charge_id: uuid.UUID) -> tuple[PlanCharge, Meter]:
    return next((c, m) for c, m in await charges_of_version(session, version_id) if c.id == charge_id)


async def _usage_provenance(session: AsyncSession, invoice: Invoice, line: InvoiceLine) -> UsageProvenance:
    assert line.plan_version_id is not None and line.plan_charge_id is not None
    charge, meter = await _charge(session, line.plan_version_id, line.plan_charge_id)
    where = dict(charge.where)
    start, end, customer_id = line.service_start, line.service_end, invoice.customer_id
    # A line split by dimensions names all of the meter's group_by; a line of a whole charge
    # names only its ``where`` (or nothing) and covers every dimensions that ``where`` selects.
    exact = bool(meter.group_by) and set(line.dimensions) == set(meter.group_by)
    [meter_usage] = await usage(session, customer_id, [meter], start, end)
    selected = {
        dimensions: partial
        for dimensions, partial in meter_usage.by_dimensions.items()
        if dimensions_match(loads_exact(dimensions), where)
        and (not exact or dimensions == canonical_json(line.dimensions))
    }
    hours = await hours_with_usage(session, customer_id, meter.id, start, end)
    rollups = [
        RollupGroup(
            dimensions=loads_exact(dimensions),
            hours=hours.get(dimensions, 0),
            event_count=partial.count,
            quantity=plain_decimal(partial.quantity(meter.aggregation)),
        )
        for dimensions, partial in sorted(selected.items())
    ]
    previously_billed, received_after = None, None
    if line.kind == "late_usage":
        earlier = await repository.earlier_billing(
            session,
            customer_id=customer_id,
            before_number=invoice.number,
            plan_charge_id=line.plan_charge_id,
            dimensions=line.dimensions,
            start=start,
            end=end,
        )
        previously_billed, received_after = plain_decimal(earlier.quantity), earlier.last_rated_at
    elif invoice.kind in ("period", "interim") and invoice.subscription_id is not None:
        # Threshold invoicing: the period's interim invoices before this one billed part of it.
        interim = await repository.interim_quantity_before(
            session, invoice, line.plan_charge_id, line.dimensions, line.service_start
        )
        previously_billed = plain_decimal(interim) if interim is not None else None
    events = repository.EventFilter(
        customer_id=customer_id,
        event_type=meter.event_type,
        start=start,
        end=end,
        exact=dict(line.dimensions) if exact else {},
        where=where,
        received_after=received_after,
        received_by=invoice.issued_at,
    )
    later = replace(events, received_after=invoice.issued_at, received_by=None)
    return UsageProvenance(
        meter=meter,
        where=where,
        start=start,
        end=end,
        rollups=rollups,
        rollup_quantity=plain_decimal(merge_all(list(selected.values())).quantity(meter.aggregation)),
        received_after=received_after,
        received_by=invoice.issued_at,
        events=await _event_summary(session, events, meter),
        previously_billed=previously_billed,
        arrived_later=int((await repository.event_summary(session, later, value_property=None))["count"]),
    )


async def _event_summary(session: AsyncSession, events: repository.EventFilter, meter: Meter) -> EventSummary:
    found = await repository.event_summary(
        session, events, value_property=meter.value_property if meter.aggregation == "sum" else None
    )
    quantity = None
    if meter.aggregation == "count":
        quantity = Decimal(found["count"])
    elif meter.aggregation == "sum":
        quantity = plain_decimal(found["total"] if found["total"] is not None else Decimal(0))
    samples = [
        SampleEvent(row["event_id"], row["occurred_at"], row["received_at"], row["trace_id"])
        for row in await repository.sample_events(session, events, limit=SAMPLE_EVENTS)
    ]
    return EventSummary(int(found["count"]), quantity, found["first_at"], found["last_at"], samples)
