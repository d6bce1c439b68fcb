"""SQL of invoices: the gapless number, inserts, pages, what a period was billed and rated on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Invoice, InvoiceLine, InvoiceTaxLine, RatedPeriod
from billing.webhook_payloads import invoice_data
from customers.models import Subscription
from ledger.repository import driver_connection
from metering.events import canonical_json, loads_exact
from notifications.webhook_events import API_VERSION


async def due_customers(session: AsyncSession, *, opening_by: datetime, closing_by: datetime) -> list[uuid.UUID]:
    """Customers who may have an invoice due (once each, whatever their number of
    subscriptions), a subscription of theirs with: no opening invoice yet though started; or whose
    period after the billing cursor may have closed by ``closing_by`` (``period_closes_at`` is
    never later than that close; a subscription without it falls back on 28 days, the shortest
    month, after the cursor); or canceled and not finally invoiced yet. A canceled subscription
    invoiced through its end is never due again, so it costs the run nothing."""
    cancel_at, invoiced_through = col(Subscription.cancel_at), col(Subscription.invoiced_through)
    closes_at = col(Subscription.period_closes_at)
    not_finished = cancel_at.is_(None) | (invoiced_through < cancel_at)
    query = (
        select(col(Subscription.customer_id))
        .where(
            (invoiced_through.is_(None) & (col(Subscription.started_at) <= opening_by))
            | ((closes_at <= closing_by) & not_finished)
            | (closes_at.is_(None) & (invoiced_through <= closing_by - timedelta(days=28)) & not_finished)
            | (cancel_at.is_not(None) & (invoiced_through < cancel_at) & (cancel_at <= opening_by))
        )
        .distinct()
        .order_by(col(Subscription.customer_id))
    )
    return list(await session.exec(query))


SUBSCRIPTION_COLUMNS = (
    "id",
    "customer_id",
    "plan_version_id",
    "started_at",
    "created_at",
    "pending_plan_version_id",
    "pending_change_at",
    "invoiced_through",
    "has_price_overrides",
    "billing_anchor",
    "billing_anchor_day",
    "trial_ends_at",
    "pending_billing_anchor",
    "period_closes_at",
)
LOCK_SUBSCRIPTIONS = (
    f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM subscriptions WHERE customer_id = %s "
    "AND (%s::uuid IS NULL OR id = %s) ORDER BY invoiced_through NULLS FIRST, created_at, id FOR UPDATE SKIP LOCKED"
)


async def subscriptions_to_bill(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID | None = None
) -> list[Subscription]:
    """The customer's subscriptions (or the one named), the one invoiced least far first, each
    locked for this transaction unless another billing run or a plan change holds it (then left
    out: SKIP LOCKED). Not attached to the session: the billing run moves ``invoiced_through``
    with the invoice's own statement."""
    connection = await driver_connection(session)
    cursor = await connection.execute(LOCK_SUBSCRIPTIONS, (customer_id, subscription_id, subscription_id))
    return [Subscription(**dict(zip(SUBSCRIPTION_COLUMNS, row, strict=True))) for row in await cursor.fetchall()]


async def event_count(
    session: AsyncSession, customer_id: uuid.UUID, event_types: Sequence[str], start: datetime, end: datetime
) -> int:
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT count(*) FROM events WHERE customer_id = %s AND event_type = ANY(%s) "
        "AND occurred_at >= %s AND occurred_at < %s",
        (customer_id, list(event_types), start, end),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def rated_periods_since(
    session: AsyncSession, subscription_id: uuid.UUID, ended_after: datetime
) -> list[RatedPeriod]:
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT customer_id, period_start, period_end, event_count, rated_at FROM rated_periods "
        "WHERE subscription_id = %s AND period_end > %s ORDER BY period_start",
        (subscription_id, ended_after),
    )
    return [
        RatedPeriod(
            subscription_id=subscription_id,
            customer_id=customer_id,
            period_start=start,
            period_end=end,
            event_count=count,
            rated_at=rated_at,
        )
        for customer_id, start, end, count, rated_at in await cursor.fetchall()
    ]


# Everything an issued invoice writes besides its ledger transactions, in one statement: its
# rated periods and the billing cursor of its subscription (an invoice outside the periods names
# none, or moves nothing), the invoice and its lines, the outbox row
# when there is an amount to collect, the email telling the customer (``billing.emails``: its
# content gets the number here), the ``invoice.issued`` webhook event (as
# ``notifications.webhook_events.emit`` writes one: the invoice's first version, its data the
# number too; the invoice is new, so its key is), and the gapless number. The counter row stays locked until
# the transaction ends, so this is the last statement before the commit.
WRITE_INVOICE = """
WITH rated AS (
  INSERT INTO rated_periods AS r (subscription_id, customer_id, period_start, period_end, event_count, rated_at)
  SELECT %(subscription_id)s, %(customer_id)s, rated.period_start, rated.period_end, rated.event_count,
         %(issued_at)s
  FROM unnest(%(rated_starts)s::timestamptz[], %(rated_ends)s::timestamptz[], %(rated_counts)s::bigint[])
       AS rated(period_start, period_end, event_count)
  ON CONFLICT (subscription_id, period_start)
  DO UPDATE SET event_count = excluded.event_count, rated_at = excluded.rated_at),
cursor_moved AS (
  UPDATE subscriptions SET invoiced_through = %(invoiced_through)s, period_closes_at = %(closes_at)s
  WHERE id = %(subscription_id)s AND %(invoiced_through)s::timestamptz IS NOT NULL),
number AS (
  UPDATE invoice_number_counter SET last_number = last_number + 1 WHERE id = 1 RETURNING last_number),
invoice AS (
  INSERT INTO invoices (id, customer_id, subscription_id, number, kind, status, currency, period_start, period_end,
                        subtotal, credits_applied, total, amount_due, tax_amount, issued_at,
                        ledger_transaction_id, credits_transaction_id, trace_id, billing_details, due_at,
                        interim_sequence)
  SELECT %(id)s, %(customer_id)s, %(subscription_id)s, number.last_number, %(kind)s, %(status)s, %(currency)s,
         %(period_start)s, %(period_end)s, %(subtotal)s, %(credits_applied)s, %(total)s, %(amount_due)s,
         %(tax_amount)s, %(issued_at)s, %(ledger_transaction_id)s, %(credits_transaction_id)s, %(trace_id)s,
         %(billing_details)s, %(due_at)s, %(interim_sequence)s
  FROM number
  RETURNING number),
lines AS (
  INSERT INTO invoice_lines (invoice_id, position, kind, description, plan_version_id, plan_charge_id, meter_id,
                             dimensions, quantity, unit_price, amount_exact, amount, service_start, service_end)
  SELECT %(id)s, line.position, line.kind, line.description, line.plan_version_id, line.plan_charge_id,
         line.meter_id, line.dimensions::jsonb, line.quantity, line.unit_price, line.amount_exact, line.amount,
         line.service_start, line.service_end
  FROM unnest(%(line_position)b::int[], %(line_kind)b::text[], %(line_description)b::text[],
              %(line_plan_version_id)b::uuid[], %(line_plan_charge_id)b::uuid[], %(line_meter_id)b::uuid[],
              %(line_dimensions)b::text[], %(line_quantity)b::numeric[], %(line_unit_price)b::numeric[],
              %(line_amount_exact)b::numeric[], %(line_amount)b::bigint[], %(line_service_start)b::timestamptz[],
              %(line_service_end)b::timestamptz[])
       AS line(position, kind, description, plan_version_id, plan_charge_id, meter_id, dimensions, quantity,
               unit_price, amount_exact, amount, service_start, service_end)),
tax_lines AS (
  INSERT INTO invoice_tax_lines (invoice_id, position, rate_key, name, rate, inclusive, taxable_amount, tax_amount,
                                 reverse_charge)
  SELECT %(id)s, tax.position - 1, tax.rate_key, tax.name, tax.rate, tax.inclusive, tax.taxable_amount,
         tax.tax_amount, tax.reverse_charge
  FROM unnest(%(tax_rate_key)s::text[], %(tax_name)s::text[], %(tax_rate)s::numeric[], %(tax_inclusive)s::boolean[],
              %(tax_taxable_amount)s::bigint[], %(tax_tax_amount)s::bigint[], %(tax_reverse_charge)s::boolean[])
       WITH ORDINALITY AS tax(rate_key, name, rate, inclusive, taxable_amount, tax_amount, reverse_charge, position)),
outbox AS (
  INSERT INTO collection_outbox (invoice_id, customer_id, attempts, status, next_attempt_at, unavailable_retries,
                                 created_at)
  SELECT %(id)s, %(customer_id)s, 0, 'pending', %(issued_at)s, 0, %(issued_at)s WHERE %(amount_due)s > 0),
email AS (
  INSERT INTO email_messages (id, message_key, kind, customer_id, recipients, locale, refs, content, status, attempts,
                              next_attempt_at, last_error, created_at)
  SELECT %(email_id)s, %(email_message_key)s, %(email_kind)s, %(customer_id)s, %(email_recipients)s::text[],
         %(email_locale)s, %(email_refs)s::jsonb,
         %(email_content)s::jsonb || jsonb_build_object('invoice_number', number.last_number),
         %(email_status)s, 0, %(email_created_at)s, %(email_last_error)s, %(email_created_at)s
  FROM number WHERE %(email_message_key)s::text IS NOT NULL
  ON CONFLICT (message_key) DO NOTHING),
event_version AS (
  INSERT INTO webhook_resource_versions (resource_type, resource_id, version) VALUES ('Invoice', %(id)s::text, 1)
  ON CONFLICT (resource_type, resource_id) DO UPDATE SET version = webhook_resource_versions.version + 1
  RETURNING version),
event AS (
  INSERT INTO webhook_events (id, event_key, type, api_version, customer_id, resource_type, resource_id,
                              resource_version, data, created_at)
  SELECT %(event_id)s, 'invoice.issued:' || %(id)s::text, 'invoice.issued', %(event_api_version)s, %(customer_id)s,
         'Invoice', %(id)s::text, event_version.version,
         %(event_data)s::jsonb || jsonb_build_object('number', 'INV-' || lpad(number.last_number::text,
                                                      greatest(6, length(number.last_number::text)), '0')),
         %(issued_at)s
  FROM number, event_version)
SELECT number FROM invoice
"""


LINE_COLUMNS = (
    "position",
    "kind",
    "description",
    "plan_version_id",
    "plan_charge_id",
    "meter_id",
    "dimensions",
    "quantity",
    "unit_price",
    "amount_exact",
    "amount",
    "service_start",
    "service_end",
)


TAX_LINE_COLUMNS = ("rate_key", "name", "rate", "inclusive", "taxable_amount", "tax_amount", "reverse_charge")
EMAIL_COLUMNS = (
    "id",
    "message_key",
    "kind",
    "recipients",
    "locale",
    "refs",
    "content",
    "status",
    "last_error",
    "created_at",
)


@dataclass(frozen=True)
class InvoiceToWrite:
    """An invoice's row without its number (taken when it is written), its lines' columns
    (``invoice_lines`` without the invoice id), the periods whose events it rated (start, end,
    event count) and where the billing cursor moves (None for an invoice outside the periods:
    a one-off charge's or a commitment's)."""

    invoice: dict[str, Any]
    lines: list[dict[str, Any]]
    rated: list[tuple[datetime, datetime, int]]
    invoiced_through: datetime | None
    closes_at: datetime | None = None  # when the period after the cursor may close (None: 28 days on)
    tax_lines: list[dict[str, Any]] = field(default_factory=list)  # invoice_tax_lines without invoice, position
    email: dict[str, Any] | None = None  # the email's outbox row (notifications.service.prepare), or none


async def write_invoice(session: AsyncSession, written: InvoiceToWrite) -> int:
    """Write the invoice (queued for collection when something is due, ``invoice.issued`` told)
    and return its number."""
    await session.flush()  # the ledger's rows first: the number's lock is the last one taken
    lines, rated = written.lines, written.rated
    params = {
        "interim_sequence": None,
        **written.invoice,
        "billing_details": Jsonb(written.invoice["billing_details"]),
        "invoiced_through": written.invoiced_through,
        "closes_at": written.closes_at,
        "rated_starts": [start for start, _, _ in rated],
        "rated_ends": [end for _, end, _ in rated],
        "rated_counts": [count for _, _, count in rated],
        **{f"line_{column}": [line[column] for line in lines] for column in LINE_COLUMNS},
        "line_dimensions": [canonical_json(line["dimensions"]) for line in lines],
        **{f"tax_{column}": [line[column] for line in written.tax_lines] for column in TAX_LINE_COLUMNS},
        **{f"email_{column}": (written.email or {}).get(column) for column in EMAIL_COLUMNS},
        "event_id": uuid.uuid4(),
        "event_api_version": API_VERSION,
        "event_data": Jsonb(invoice_data(written.invoice, number=None)),
    }
    connection = await driver_connection(session)
    cursor = await connection.execute(WRITE_INVOICE, params)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def billed_usage(
    session: AsyncSession, subscription: Subscription, start: datetime, end: datetime
) -> dict[tuple[uuid.UUID | None, str, datetime], tuple[Decimal, Decimal]]:
    """What usage of ``[start, end)`` the subscription billed so far, by (charge, dimensions,
    start of the part of the period the line rated): quantity, exact amount. (Its customer is
    named too: the customer's invoices are indexed, a subscription's only at its boundaries.)"""
    rows = await session.execute(
        text(
            "SELECT l.plan_charge_id, l.dimensions::text, l.service_start, sum(l.quantity), sum(l.amount_exact) "
            "FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE i.customer_id = :customer_id AND i.subscription_id = :subscription_id AND i.status <> 'void' "
            "AND l.kind IN ('usage', 'late_usage') AND l.service_start >= :start AND l.service_end <= :end "
            "GROUP BY l.plan_charge_id, l.dimensions::text, l.service_start"
        ),
        {"customer_id": subscription.customer_id, "subscription_id": subscription.id, "start": start, "end": end},
    )
    return {
        (charge_id, dimensions, service_start): (quantity or Decimal(0), amount)
        for charge_id, dimensions, service_start, quantity, amount in rows
    }


LineKey = tuple[uuid.UUID | None, str, datetime]  # charge, canonical dimensions, service start


@dataclass(frozen=True)
class BilledUsage:
    """What the interim invoices of a period billed of one charge, dimensions and part."""

    quantity: Decimal
    amount_exact: Decimal
    amount: int
    description: str
    service_end: datetime
    plan_version_id: uuid.UUID | None
    meter_id: uuid.UUID | None


async def interim_billed(
    session: AsyncSession, subscription: Subscription, period_start: datetime
) -> dict[LineKey, BilledUsage]:
    """What the interim invoices of the period starting at ``period_start`` billed, by charge,
    canonical dimensions and service start. Void ones count too: voiding an interim invoice
    forgives its usage, it does not bill it again on the period invoice."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT l.plan_charge_id, l.dimensions::text, l.service_start, sum(l.quantity), sum(l.amount_exact), "
        "sum(l.amount), min(l.description), max(l.service_end), "
        "(array_agg(l.plan_version_id))[1], (array_agg(l.meter_id))[1] "
        "FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE i.customer_id = %s AND i.subscription_id = %s AND i.kind = 'interim' AND i.period_start = %s "
        "AND l.kind = 'usage' GROUP BY l.plan_charge_id, l.dimensions::text, l.service_start",
        (subscription.customer_id, subscription.id, period_start),
    )
    return {
        (charge_id, canonical_json(loads_exact(dimensions)), service_start): BilledUsage(
            quantity or Decimal(0), amount_exact, int(amount), description, service_end, version_id, meter_id
        )
        for (
            charge_id,
            dimensions,
            service_start,
            quantity,
            amount_exact,
            amount,
            description,
            service_end,
            version_id,
            meter_id,
        ) in await cursor.fetchall()
    }


async def interim_invoices_issued(session: AsyncSession, subscription: Subscription, period_start: datetime) -> int:
    """How many interim invoices the period starting at ``period_start`` has (void ones too)."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT count(*) FROM invoices WHERE customer_id = %s AND subscription_id = %s AND kind = 'interim' "
        "AND period_start = %s",
        (subscription.customer_id, subscription.id, period_start),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def threshold_subscriptions(
    session: AsyncSession, customer_ids: list[uuid.UUID] | None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(customer, subscription) of the opened subscriptions with a phase on a plan version that
    invoices at a threshold, of the customers named (all when None)."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT DISTINCT s.customer_id, s.id FROM subscriptions s "
        "JOIN subscription_phases p ON p.subscription_id = s.id "
        "JOIN plan_versions v ON v.id = p.plan_version_id "
        "WHERE v.invoice_threshold IS NOT NULL AND s.invoiced_through IS NOT NULL "
        "AND (%s::uuid[] IS NULL OR s.customer_id = ANY(%s)) ORDER BY s.customer_id, s.id",
        (customer_ids, customer_ids),
    )
    return [(customer_id, subscription_id) for customer_id, subscription_id in await cursor.fetchall()]


async def base_fee_billed(
    session: AsyncSession, subscription: Subscription, period_start: datetime
) -> tuple[uuid.UUID | None, Decimal]:
    """The plan version and exact base fee the subscription billed in advance for the period
    starting at ``period_start`` (None and 0 when no fee was billed). Void invoices count too:
    voiding an invoice forgives it, it does not make its fee billable again."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT l.plan_version_id, l.amount_exact FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE i.customer_id = %s AND i.subscription_id = %s AND l.kind = 'base_fee' AND l.service_start = %s "
        "ORDER BY i.issued_at LIMIT 1",
        (subscription.customer_id, subscription.id, period_start),
    )
    row = await cursor.fetchone()
    return (row[0], row[1]) if row else (None, Decimal(0))


async def invoices_page(
    session: AsyncSession, customer_id: uuid.UUID, *, before_number: int | None, limit: int
) -> list[Invoice]:
    """Newest first: numbers grow in the order invoices are issued, so they are the keyset."""
    query = select(Invoice).where(col(Invoice.customer_id) == customer_id)
    if before_number is not None:
        query = query.where(col(Invoice.number) < before_number)
    query = query.order_by(col(Invoice.number).desc()).limit(limit)
    return list(await session.exec(query))


async def invoices_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Invoice]:
    return {invoice.id: invoice for invoice in await session.exec(select(Invoice).where(col(Invoice.id).in_(ids)))}


async def lines_of(session: AsyncSession, invoice_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[InvoiceLine]]:
    query = (
        select(InvoiceLine)
        .where(col(InvoiceLine.invoice_id).in_(invoice_ids))
        .order_by(col(InvoiceLine.invoice_id), col(InvoiceLine.position))
    )
    grouped: dict[uuid.UUID, list[InvoiceLine]] = {invoice_id: [] for invoice_id in invoice_ids}
    for line in await session.exec(query):
        grouped[line.invoice_id].append(line)
    return grouped


async def tax_lines_of(
    session: AsyncSession, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[InvoiceTaxLine]]:
    query = (
        select(InvoiceTaxLine)
        .where(col(InvoiceTaxLine.invoice_id).in_(invoice_ids))
        .order_by(col(InvoiceTaxLine.invoice_id), col(InvoiceTaxLine.position))
    )
    grouped: dict[uuid.UUID, list[InvoiceTaxLine]] = {invoice_id: [] for invoice_id in invoice_ids}
    for line in await session.exec(query):
        grouped[line.invoice_id].append(line)
    return grouped


async def invoice_by_number(session: AsyncSession, number: int) -> Invoice | None:
    return (await session.exec(select(Invoice).where(col(Invoice.number) == number))).first()


async def invoice_by_id(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    return await session.get(Invoice, invoice_id)


async def invoice_for_update(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    query = select(Invoice).where(col(Invoice.id) == invoice_id).with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def mark_paid(session: AsyncSession, invoice_id: uuid.UUID) -> bool:
    """The one change an issued invoice allows: its status (the immutability trigger checks).
    Whether it was issued, and is paid now."""
    found = await session.execute(
        text("UPDATE invoices SET status = 'paid' WHERE id = :id AND status = 'issued' RETURNING id"),
        {"id": invoice_id},
    )
    return found.first() is not None


async def set_invoice_status(session: AsyncSession, invoice_id: uuid.UUID, status: str) -> None:
    await session.execute(
        text("UPDATE invoices SET status = :status WHERE id = :id"), {"status": status, "id": invoice_id}
    )


async def advance_billed(
    session: AsyncSession, customer_id: uuid.UUID, period_start: datetime
) -> list[tuple[uuid.UUID, uuid.UUID, Decimal]]:
    """What the in-advance charges billed at the start of the period starting at ``period_start``:
    (plan version, charge, quantity) of each keyed ``advance`` bill."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT plan_version_id, plan_charge_id, quantity FROM advance_charge_bills "
        "WHERE customer_id = %s AND period_start = %s AND kind = 'advance' ORDER BY plan_charge_id",
        (customer_id, period_start),
    )
    return [(row[0], row[1], row[2]) for row in await cursor.fetchall()]


async def advance_amount_billed(session: AsyncSession, subscription: Subscription, period_start: datetime) -> Decimal:
    """The exact amount the subscription's in-advance charges billed at the start of the period
    (minimum spend): those on its own invoices, not another subscription's of the customer."""
    connection = await driver_connection(session)
    cursor = await connection.execute(
        "SELECT coalesce(sum(b.amount_exact), 0) FROM advance_charge_bills b "
        "JOIN invoices i ON i.id = b.invoice_id "
        "WHERE b.customer_id = %s AND b.period_start = %s AND b.kind = 'advance' AND i.subscription_id = %s",
        (subscription.customer_id, period_start, subscription.id),
    )
    row = await cursor.fetchone()
    assert row is not None
    return Decimal(row[0])


ADVANCE_BILL_COLUMNS = (
    "customer_id",
    "plan_charge_id",
    "period_start",
    "effective_at",
    "kind",
    "plan_version_id",
    "previous_quantity",
    "quantity",
    "share",
    "amount_exact",
    "invoice_id",
)


async def write_advance_bills(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Key each amount an in-advance charge bills, in the invoice's transaction: a second copy
    violates the primary key and rolls the whole invoice back."""
    if not rows:
        return
    connection = await driver_connection(session)
    async with connection.cursor() as cursor:
        await cursor.executemany(
            f"INSERT INTO advance_charge_bills ({', '.join(ADVANCE_BILL_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(ADVANCE_BILL_COLUMNS))})",
            [tuple(row[column] for column in ADVANCE_BILL_COLUMNS) for row in rows],
        )
