"""SQL of usage and spend alerts: their definitions, which customers they watch, and the firings
(each inserted once by its unique key)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import UsageAlert, UsageAlertFiring
from customers.models import Subscription
from pricing.models import PlanVersion

# A live alert's name is unique per owner (a partial unique index): a concurrent or retried
# create of the same name inserts nothing, and the caller says the name is taken.
INSERT_ALERT = text(
    "INSERT INTO usage_alerts (id, name, customer_id, plan_id, metric, meter_id, currency, threshold_unit, "
    "spend_base, thresholds, actor, created_at) VALUES (:id, :name, :customer_id, :plan_id, :metric, :meter_id, "
    ":currency, :threshold_unit, :spend_base, :thresholds, :actor, :created_at) "
    "ON CONFLICT DO NOTHING RETURNING id"
)

# Of the customers a roll-up touched, those with something to evaluate: an alert of their own, an
# alert on the plan of one of their subscriptions (now or pending), a limited charge in such a
# plan, or a price override (which may set a limit). Everyone else costs this one query.
WATCHED = text(
    """
SELECT c.id FROM unnest(CAST(:ids AS uuid[])) AS c(id)
WHERE EXISTS (SELECT 1 FROM usage_alerts a WHERE a.customer_id = c.id AND a.deleted_at IS NULL)
   OR EXISTS (SELECT 1 FROM subscriptions s
              JOIN plan_versions v ON v.id IN (s.plan_version_id, s.pending_plan_version_id)
              WHERE s.customer_id = c.id
                AND (s.has_price_overrides
                     OR EXISTS (SELECT 1 FROM usage_alerts a WHERE a.plan_id = v.plan_id AND a.deleted_at IS NULL)
                     OR EXISTS (SELECT 1 FROM plan_charges pc
                                WHERE pc.plan_version_id = v.id AND pc."limit" IS NOT NULL)))
"""
)

RECORD_FIRING = text(
    "INSERT INTO usage_alert_firings (id, alert_id, customer_id, period_start, period_end, threshold, "
    "threshold_value, observed, fired_at) VALUES (:id, :alert_id, :customer_id, :period_start, :period_end, "
    ":threshold, :threshold_value, :observed, :fired_at) "
    "ON CONFLICT (alert_id, customer_id, period_start, threshold) DO NOTHING RETURNING id"
)


async def insert_alert(session: AsyncSession, alert: UsageAlert) -> bool:
    """Whether it was written (False: a live alert of the owner has its name)."""
    found = (await session.execute(INSERT_ALERT, alert.model_dump())).first()
    return found is not None


async def alert_by_id(session: AsyncSession, alert_id: uuid.UUID) -> UsageAlert | None:
    return await session.get(UsageAlert, alert_id, populate_existing=True)


async def watched_customers(session: AsyncSession, customer_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    rows = await session.execute(WATCHED, {"ids": list(customer_ids)})
    return [row[0] for row in rows]


async def alerts_watching(session: AsyncSession, customer_id: uuid.UUID) -> list[UsageAlert]:
    """The live alerts of the customer and of the plans of their subscriptions, oldest first."""
    plans = (
        select(PlanVersion.plan_id)
        .join(Subscription, col(Subscription.plan_version_id) == col(PlanVersion.id))
        .where(col(Subscription.customer_id) == customer_id)
    )
    query = (
        select(UsageAlert)
        .where(col(UsageAlert.deleted_at).is_(None))
        .where(or_(col(UsageAlert.customer_id) == customer_id, col(UsageAlert.plan_id).in_(plans)))
        .order_by(col(UsageAlert.created_at), col(UsageAlert.id))
    )
    return list(await session.exec(query))


async def alerts_of_plan(session: AsyncSession, plan_id: uuid.UUID) -> list[UsageAlert]:
    query = (
        select(UsageAlert)
        .where(col(UsageAlert.plan_id) == plan_id, col(UsageAlert.deleted_at).is_(None))
        .order_by(col(UsageAlert.created_at), col(UsageAlert.id))
    )
    return list(await session.exec(query))


async def record_firing(
    session: AsyncSession,
    *,
    alert_id: uuid.UUID,
    customer_id: uuid.UUID,
    period: tuple[datetime, datetime],
    threshold: Decimal,
    threshold_value: Decimal,
    observed: Decimal,
    fired_at: datetime,
) -> UsageAlertFiring | None:
    """The firing, or None when this threshold already fired for the customer in the period."""
    firing = UsageAlertFiring(
        id=uuid.uuid4(),
        alert_id=alert_id,
        customer_id=customer_id,
        period_start=period[0],
        period_end=period[1],
        threshold=threshold,
        threshold_value=threshold_value,
        observed=observed,
        fired_at=fired_at,
    )
    found = (await session.execute(RECORD_FIRING, firing.model_dump())).first()
    return firing if found else None


async def firings_of(session: AsyncSession, customer_id: uuid.UUID, *, limit: int) -> list[UsageAlertFiring]:
    query = (
        select(UsageAlertFiring)
        .where(col(UsageAlertFiring.customer_id) == customer_id)
        .order_by(col(UsageAlertFiring.fired_at).desc(), col(UsageAlertFiring.id))
        .limit(limit)
    )
    return list(await session.exec(query))


async def alerts_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, UsageAlert]:
    if not ids:
        return {}
    rows = await session.exec(select(UsageAlert).where(col(UsageAlert.id).in_(list(ids))))
    return {row.id: row for row in rows}
