"""SQL of the catalog."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.models import Meter, Plan, PlanCharge, PlanVersion


async def lock_catalog(session: AsyncSession) -> None:
    """Serialize catalog writers for this transaction, so two applies never race a version."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('tally.catalog'))"))


async def meters_by_key(session: AsyncSession) -> dict[str, Meter]:
    result = await session.exec(select(Meter).order_by(Meter.key))  # type: ignore[call-overload]
    return {meter.key: meter for meter in result.scalars()}


async def plans_by_key(session: AsyncSession) -> dict[str, Plan]:
    result = await session.exec(select(Plan).order_by(Plan.key))  # type: ignore[call-overload]
    return {plan.key: plan for plan in result.scalars()}


async def latest_versions(session: AsyncSession) -> dict[uuid.UUID, PlanVersion]:
    """The newest version of every plan, keyed by plan id."""
    newest = (
        select(PlanVersion.plan_id, func.max(PlanVersion.version).label("version"))
        .group_by(PlanVersion.plan_id)
        .subquery()
    )
    query = select(PlanVersion).join(
        newest,
        (PlanVersion.plan_id == newest.c.plan_id) & (PlanVersion.version == newest.c.version),
    )
    result = await session.exec(query)  # type: ignore[call-overload]
    return {version.plan_id: version for version in result.scalars()}


async def latest_version_of(session: AsyncSession, plan_key: str) -> tuple[Plan, PlanVersion] | None:
    query = (
        select(Plan, PlanVersion)
        .join(PlanVersion, PlanVersion.plan_id == Plan.id)
        .where(Plan.key == plan_key)
        .order_by(PlanVersion.version.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    row = (await session.exec(query)).first()  # type: ignore[call-overload]
    return (row[0], row[1]) if row else None


async def charges_of(session: AsyncSession, version_ids: list[uuid.UUID]) -> list[tuple[PlanCharge, Meter]]:
    query = (
        select(PlanCharge, Meter)
        .join(Meter, Meter.id == PlanCharge.meter_id)
        .where(PlanCharge.plan_version_id.in_(version_ids))  # type: ignore[attr-defined]
        .order_by(PlanCharge.plan_version_id, PlanCharge.position)
    )
    result = await session.exec(query)  # type: ignore[call-overload]
    return [(row[0], row[1]) for row in result.all()]


async def plan_versions_by_id(
    session: AsyncSession, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Plan, PlanVersion]]:
    query = (
        select(Plan, PlanVersion)
        .join(PlanVersion, PlanVersion.plan_id == Plan.id)
        .where(PlanVersion.id.in_(version_ids))  # type: ignore[attr-defined]
    )
    result = await session.exec(query)  # type: ignore[call-overload]
    return {row[1].id: (row[0], row[1]) for row in result.all()}
