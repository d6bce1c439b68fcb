"""SQL of the operational gauges (:mod:`billing.insights.gauges`): one query over the collection
outbox, Stripe events, billing failures, reconciliation discrepancies, anomalies, watermarks and the
usage waiting for the roller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

SNAPSHOT = text("""
SELECT 'outbox' AS family, status AS label, count(*)::float8 AS value,
       extract(epoch FROM CAST(:as_of AS timestamptz) - min(created_at))::float8 AS age
FROM collection_outbox WHERE status IN ('pending', 'in_flight', 'action_required') GROUP BY status
UNION ALL
SELECT 'webhooks_failed', NULL, count(*)::float8, NULL FROM stripe_events WHERE status = 'failed'
UNION ALL
SELECT 'customers_failing', NULL, count(*)::float8, NULL FROM billing_failures
UNION ALL
SELECT 'discrepancies_open', NULL, count(*)::float8, NULL FROM reconciliation_discrepancies WHERE status = 'open'
UNION ALL
SELECT 'anomalies_open', kind, count(*)::float8, NULL FROM anomalies WHERE status = 'open' GROUP BY kind
UNION ALL
SELECT 'watermark_age', NULL, extract(epoch FROM CAST(:as_of AS timestamptz) - min(watermark))::float8, NULL
FROM customer_watermarks
UNION ALL
SELECT 'rollup_waiting', NULL, count(*)::float8,
       extract(epoch FROM CAST(:as_of AS timestamptz) - min(counted_at))::float8
FROM usage_pending
""")


async def gauge_readings(session: AsyncSession, *, as_of: datetime) -> list[Any]:
    """(family, label, value, age in seconds) rows: one per outbox status waiting and per kind of
    open anomaly, one for each other gauge."""
    return list(await session.execute(SNAPSHOT, {"as_of": as_of}))
