"""The SQL of the finance overview (:mod:`billing.insights.overview`): every statement reads whole tables
across customers, grouped by currency, and returns minor units or exact decimals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

# Each subscription's phase in effect at :at, kept when it is active (a paused or canceled part
# bills no base fee), with the fee and interval of its plan version.
RECURRING_FEES_AT = text("""
SELECT customer_id, currency, interval, base_fee FROM (
  SELECT DISTINCT ON (ph.subscription_id) ph.customer_id, ph.status, v.currency, v.interval, v.base_fee
  FROM subscription_phases ph
  JOIN plan_versions v ON v.id = ph.plan_version_id
  WHERE ph.starts_at <= :at
  ORDER BY ph.subscription_id, ph.starts_at DESC
) AS in_effect
WHERE status = 'ACTIVE' AND base_fee > 0
""")

# Invoices issued in [:since, :until), void ones left out; credit purchases and prepaid
# commitments are prepayments, billed before anything is delivered.
REVENUE_BY_MONTH = text("""
SELECT date_trunc('month', issued_at, 'UTC') AS month, currency, sum(subtotal)::bigint AS billed
FROM invoices
WHERE issued_at >= :since AND issued_at < :until
  AND status <> 'void' AND kind NOT IN ('credit_purchase', 'commitment')
GROUP BY 1, 2
ORDER BY 1, 2
""")

# What each unpaid invoice still asks for (its amount due less what REDUCE_DUE credit notes took
# off it), with the days since it fell due (negative: not due yet). An unpaid credit purchase is
# no debt (it posts nothing until paid), so it is not a receivable.
OPEN_RECEIVABLES = text("""
SELECT i.currency,
       i.amount_due - coalesce((SELECT sum(n.amount) FROM credit_notes n
                                WHERE n.invoice_id = i.id AND n.method = 'REDUCE_DUE'), 0) AS still_due,
       floor(extract(epoch FROM CAST(:as_of AS timestamptz) - coalesce(i.due_at, i.issued_at)) / 86400)::int
         AS days_overdue,
       coalesce(i.due_at, i.issued_at) <= CAST(:as_of AS timestamptz) AS past_due
FROM invoices i
WHERE i.status = 'issued' AND i.amount_due > 0 AND i.kind <> 'credit_purchase'
""")

CREDITS_OUTSTANDING = text("""
SELECT currency, sum(remaining)::bigint AS remaining, count(DISTINCT customer_id) AS customers
FROM credit_grants
WHERE status = 'active' AND remaining > 0
GROUP BY currency
ORDER BY currency
""")

# The meters most used over the window (by events counted), then their events per UTC day.
TOP_METERS = text("""
SELECT m.key, m.name, sum(r.event_count)::bigint AS events
FROM usage_daily_rollups r
JOIN meters m ON m.id = r.meter_id
WHERE r.day >= :since AND r.day < :until
GROUP BY m.key, m.name
ORDER BY events DESC, m.key
LIMIT :limit
""")

EVENTS_PER_DAY = text("""
SELECT m.key, r.day, sum(r.event_count)::bigint AS events
FROM usage_daily_rollups r
JOIN meters m ON m.id = r.meter_id
WHERE r.day >= :since AND r.day < :until AND m.key = ANY(:keys)
GROUP BY m.key, r.day
""")


async def recurring_fees_at(session: AsyncSession, at: datetime) -> list[Any]:
    return list((await session.execute(RECURRING_FEES_AT, {"at": at})).mappings())


async def revenue_by_month(session: AsyncSession, *, since: datetime, until: datetime) -> list[Any]:
    return list((await session.execute(REVENUE_BY_MONTH, {"since": since, "until": until})).mappings())


async def open_receivables(session: AsyncSession, *, as_of: datetime) -> list[Any]:
    return list((await session.execute(OPEN_RECEIVABLES, {"as_of": as_of})).mappings())


async def credits_outstanding(session: AsyncSession) -> list[Any]:
    return list((await session.execute(CREDITS_OUTSTANDING)).mappings())


async def top_meters(session: AsyncSession, *, since: datetime, until: datetime, limit: int) -> list[Any]:
    params = {"since": since, "until": until, "limit": limit}
    return list((await session.execute(TOP_METERS, params)).mappings())


async def events_per_day(session: AsyncSession, keys: list[str], *, since: datetime, until: datetime) -> list[Any]:
    params = {"keys": keys, "since": since, "until": until}
    return list((await session.execute(EVENTS_PER_DAY, params)).mappings())
