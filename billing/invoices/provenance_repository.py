"""SQL of invoice provenance: the raw events and rollup hours behind a usage line, and what earlier
invoices billed of the same period. Read-only; every query leads with ``customer_id`` (the events
index is customer, type, time)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Invoice
from metering.events import canonical_json


@dataclass(frozen=True)
class EventFilter:
    """Which raw events fed a usage line: the customer's events of the meter's type over
    ``[start, end)`` whose properties carry the line's dimensions (``exact``: each value as JSON)
    and the charge's ``where`` (each value as text), received in ``(received_after, received_by]``."""

    customer_id: uuid.UUID
    event_type: str
    start: datetime
    end: datetime
    exact: dict[str, Any]
    where: dict[str, str]
    received_after: datetime | None
    received_by: datetime | None

    def sql(self) -> tuple[str, dict[str, Any]]:
        clauses = [
            "customer_id = :customer_id",
            "event_type = :event_type",
            "occurred_at >= :start",
            "occurred_at < :end",
        ]
        params: dict[str, Any] = {
            "customer_id": self.customer_id,
            "event_type": self.event_type,
            "start": self.start,
            "end": self.end,
        }
        for i, (key, value) in enumerate(sorted(self.exact.items())):
            # A missing property is a null dimension, as ingestion measures it.
            clauses.append(f"coalesce(properties -> :exact_key{i}, 'null'::jsonb) = CAST(:exact_value{i} AS jsonb)")
            params |= {f"exact_key{i}": key, f"exact_value{i}": canonical_json(value)}
        for i, (key, value) in enumerate(sorted(self.where.items())):
            clauses.append(f"properties ->> :where_key{i} = :where_value{i}")
            params |= {f"where_key{i}": key, f"where_value{i}": value}
        if self.received_after is not None:
            clauses.append("received_at > :received_after")
            params["received_after"] = self.received_after
        if self.received_by is not None:
            clauses.append("received_at <= :received_by")
            params["received_by"] = self.received_by
        return " AND ".join(clauses), params


async def event_summary(session: AsyncSession, events: EventFilter, *, value_property: str | None) -> Any:
    """Count, first and last event time and, given the property a ``sum`` meter reads, the sum."""
    where, params = events.sql()
    total = "sum(CAST(properties ->> :value_property AS numeric))" if value_property else "NULL::numeric"
    if value_property:
        params["value_property"] = value_property
    row = await session.execute(
        text(
            f"SELECT count(*) AS count, min(occurred_at) AS first_at, max(occurred_at) AS last_at, {total} AS total "
            f"FROM events WHERE {where}"
        ),
        params,
    )
    return row.mappings().one()


async def sample_events(session: AsyncSession, events: EventFilter, *, limit: int) -> list[Any]:
    """The first ``limit`` events in time, with the trace that ingested each."""
    where, params = events.sql()
    rows = await session.execute(
        text(
            f"SELECT event_id, occurred_at, received_at, trace_id FROM events WHERE {where} "
            "ORDER BY occurred_at, event_id LIMIT :limit"
        ),
        params | {"limit": limit},
    )
    return list(rows.mappings())


@dataclass(frozen=True)
class EarlierBilling:
    quantity: Decimal  # what earlier invoices billed of the line's charge and dimensions in the period
    last_rated_at: datetime | None  # when an earlier invoice last rated the period


async def earlier_billing(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    before_number: int,
    plan_charge_id: uuid.UUID | None,
    dimensions: dict[str, Any],
    start: datetime,
    end: datetime,
) -> EarlierBilling:
    """What invoices issued before ``before_number`` billed of ``[start, end)``: the period's own
    invoice and any that billed late usage for it (void invoices do not count)."""
    row = await session.execute(
        text(
            """
            WITH earlier AS (
              SELECT i.id, i.issued_at FROM invoices i
              WHERE i.customer_id = :customer_id AND i.number < :before_number AND i.status <> 'void'
                AND ((i.kind = 'period' AND i.period_start <= :start AND i.period_end >= :end)
                     OR EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = i.id AND l.kind = 'late_usage'
                                AND l.service_start >= :start AND l.service_end <= :end)))
            SELECT
              (SELECT coalesce(sum(l.quantity), 0) FROM invoice_lines l JOIN earlier e ON e.id = l.invoice_id
               WHERE l.kind IN ('usage', 'late_usage') AND l.plan_charge_id = :plan_charge_id
                 AND l.dimensions = CAST(:dimensions AS jsonb)
                 AND l.service_start >= :start AND l.service_end <= :end) AS quantity,
              (SELECT max(issued_at) FROM earlier) AS last_rated_at
            """
        ),
        {
            "customer_id": customer_id,
            "before_number": before_number,
            "plan_charge_id": plan_charge_id,
            "dimensions": canonical_json(dimensions),
            "start": start,
            "end": end,
        },
    )
    found = row.mappings().one()
    return EarlierBilling(Decimal(found["quantity"]), found["last_rated_at"])


async def ingest_traces(
    session: AsyncSession, customer_id: uuid.UUID, start: datetime, end: datetime, received_by: datetime, *, limit: int
) -> list[Any]:
    """The first traces (by arrival) that ingested the customer's events of ``[start, end)``
    received by ``received_by``: each with its event count and one of its event ids."""
    rows = await session.execute(
        text(
            "SELECT trace_id, count(*) AS events, min(event_id) AS event_id FROM events "
            "WHERE customer_id = :customer_id AND occurred_at >= :start AND occurred_at < :end "
            "AND received_at <= :received_by AND trace_id ~ '^[0-9a-f]{32}$' "
            "GROUP BY trace_id ORDER BY min(received_at), trace_id LIMIT :limit"
        ),
        {"customer_id": customer_id, "start": start, "end": end, "received_by": received_by, "limit": limit},
    )
    return list(rows.mappings())


async def advance_share(
    session: AsyncSession, invoice_id: uuid.UUID, charge_id: uuid.UUID, effective_at: datetime, kinds: tuple[str, ...]
) -> Decimal | None:
    """The share of its period an in-advance charge's amount on an invoice is for, as it was keyed."""
    row = await session.execute(
        text(
            "SELECT share FROM advance_charge_bills WHERE invoice_id = :invoice AND plan_charge_id = :charge "
            "AND effective_at = :at AND kind = ANY(:kinds) ORDER BY kind LIMIT 1"
        ),
        {"invoice": invoice_id, "charge": charge_id, "at": effective_at, "kinds": list(kinds)},
    )
    return row.scalar_one_or_none()


async def interim_quantity_before(
    session: AsyncSession,
    invoice: Invoice,
    plan_charge_id: uuid.UUID,
    dimensions: dict[str, Any],
    service_start: datetime,
) -> Decimal | None:
    """The quantity the interim invoices of ``invoice``'s period issued before it billed of the
    charge, dimensions and part (None when they billed none of it)."""
    row = await session.execute(
        text(
            "SELECT sum(l.quantity) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE i.customer_id = :customer_id AND i.subscription_id = :subscription_id AND i.kind = 'interim' "
            "AND i.period_start = :period_start AND i.number < :number AND l.kind = 'usage' "
            "AND l.plan_charge_id = :plan_charge_id AND l.dimensions = CAST(:dimensions AS jsonb) "
            "AND l.service_start = :service_start"
        ),
        {
            "customer_id": invoice.customer_id,
            "subscription_id": invoice.subscription_id,
            "period_start": invoice.period_start,
            "number": invoice.number,
            "plan_charge_id": plan_charge_id,
            "dimensions": canonical_json(dimensions),
            "service_start": service_start,
        },
    )
    quantity: Decimal | None = row.scalar_one()
    return quantity
