"""SQL of the catalog."""

from __future__ import annotations

import uuid

from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.models import Meter, Plan, PlanCharge, PlanVersion, TaxRate


async def lock_catalog(session: AsyncSession) -> None:
    """Serialize catalog writers for this transaction, so two applies never race a version."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('tally.catalog'))"))


async def meters_by_key(session: AsyncSession) -> dict[str, Meter]:
    return {meter.key: meter for meter in await session.exec(select(Meter).order_by(col(Meter.key)))}


async def meter_by_key(session: AsyncSession, key: str) -> Meter | None:
    return (await session.exec(select(Meter).where(col(Meter.key) == key))).first()


async def plans_by_key(session: AsyncSession) -> dict[str, Plan]:
    return {plan.key: plan for plan in await session.exec(select(Plan).order_by(col(Plan.key)))}


async def latest_versions(session: AsyncSession) -> dict[uuid.UUID, PlanVersion]:
    """The newest version of every plan in the plan's own currency, keyed by plan id."""
    query = (
        select(PlanVersion)
        .where(col(PlanVersion.primary_currency))
        .ext(distinct_on(col(PlanVersion.plan_id)))
        .order_by(col(PlanVersion.plan_id), col(PlanVersion.version).desc())
    )
    return {version.plan_id: version for version in await session.exec(query)}


async def latest_version_of(
    session: AsyncSession, plan_key: str, currency: str | None = None
) -> tuple[Plan, PlanVersion] | None:
    """The plan's newest version: priced in ``currency`` when it has prices in it (a currency
    option), else in the plan's own currency (the caller then refuses a currency mismatch)."""
    newest = (
        select(func.max(PlanVersion.version))
        .join(Plan, col(PlanVersion.plan_id) == col(Plan.id))
        .where(col(Plan.key) == plan_key)
        .scalar_subquery()
    )
    query = (
        select(Plan, PlanVersion)
        .join(PlanVersion, col(PlanVersion.plan_id) == col(Plan.id))
        .where(col(Plan.key) == plan_key, col(PlanVersion.version) == newest)
    )
    rows = [(plan, version) for plan, version in await session.exec(query)]
    chosen = next((row for row in rows if row[1].currency == currency), None)
    return chosen or next((row for row in rows if row[1].primary_currency), None)


async def charges_of(session: AsyncSession, version_ids: list[uuid.UUID]) -> list[tuple[PlanCharge, Meter]]:
    query = (
        select(PlanCharge, Meter)
        .join(Meter, col(Meter.id) == col(PlanCharge.meter_id))
        .where(col(PlanCharge.plan_version_id).in_(version_ids))
        .order_by(col(PlanCharge.plan_version_id), col(PlanCharge.position))
    )
    return [(charge, meter) for charge, meter in await session.exec(query)]


async def plan_versions_by_id(
    session: AsyncSession, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Plan, PlanVersion]]:
    query = (
        select(Plan, PlanVersion)
        .join(PlanVersion, col(PlanVersion.plan_id) == col(Plan.id))
        .where(col(PlanVersion.id).in_(version_ids))
    )
    return {version.id: (plan, version) for plan, version in await session.exec(query)}


async def current_tax_rates(session: AsyncSession) -> list[TaxRate]:
    """The newest version of every tax rate, by key."""
    query = select(TaxRate).ext(distinct_on(col(TaxRate.key))).order_by(col(TaxRate.key), col(TaxRate.version).desc())
    return list(await session.exec(query))
