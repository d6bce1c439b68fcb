"""What the rest of Tally calls to declare and read the catalog."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from pricing import repository
from pricing.catalog import (
    CatalogInvalid,
    CatalogProblem,
    CatalogSpec,
    ChargeSpec,
    MeterSpec,
    PlanSpec,
    TaxRateSpec,
    parse_catalog,
)
from pricing.models import Meter, Plan, PlanCharge, PlanVersion, TaxRate
from pricing.rating import ChargeTerms, Tier

# A meter's identity: changing any of these would silently change what past usage meant.
METER_IDENTITY = ("event_type", "aggregation", "value_property", "group_by")


@dataclass(frozen=True)
class CatalogChange:
    kind: str  # "meter" or "plan"
    key: str
    action: str  # "create", "update", "new_version" or "unchanged"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.detail}"


async def apply_catalog(
    session: AsyncSession, catalog_text: str, *, as_of: datetime, dry_run: bool = False
) -> list[CatalogChange]:
    """Validate a catalog file against itself and the database, then write what changed.

    Nothing is written when any problem is found (:class:`CatalogInvalid` lists them all) or
    when ``dry_run`` is set. Re-applying an unchanged file changes nothing; a plan whose pricing
    changed gets a new version, and subscriptions stay on the version they have.
    """
    await repository.lock_catalog(session)
    meters = await repository.meters_by_key(session)
    spec = _validated(catalog_text, meters)
    plans = await repository.plans_by_key(session)
    latest = await repository.latest_versions(session)

    changes: list[CatalogChange] = []
    for meter_spec in spec.meters:
        changes.append(_meter_change(meter_spec, meters.get(meter_spec.key)))
    for plan_spec in spec.plans:
        plan = plans.get(plan_spec.key)
        changes.append(_plan_change(plan_spec, plan, latest.get(plan.id) if plan else None))
    rates = {rate.key: rate for rate in await repository.current_tax_rates(session)}
    rate_changes = [_tax_rate_change(rate_spec, rates.get(rate_spec.key)) for rate_spec in spec.tax_rates]
    if dry_run:
        return changes + rate_changes

    for meter_spec, change in zip(spec.meters, changes, strict=False):
        _write_meter(session, meter_spec, meters, change, as_of)
    await session.flush()
    for plan_spec, change in zip(spec.plans, changes[len(spec.meters) :], strict=True):
        await _write_plan(session, plan_spec, plans, latest, meters, change, as_of)
    for rate_spec, change in zip(spec.tax_rates, rate_changes, strict=True):
        if change.action != "unchanged":
            previous = rates.get(rate_spec.key)
            session.add(
                TaxRate(
                    key=rate_spec.key,
                    version=previous.version + 1 if previous else 1,
                    **_tax_rate_columns(rate_spec),
                    created_at=as_of,
                )
            )
    await session.flush()
    return changes + rate_changes


def _tax_rate_columns(spec: TaxRateSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "rate": spec.rate,
        "inclusive": spec.inclusive,
        "country": spec.country,
        "region": spec.region,
    }


def _tax_rate_change(spec: TaxRateSpec, current: TaxRate | None) -> CatalogChange:
    """A tax rate is versioned like a plan: any change is a new version, and invoices already
    issued keep the rate they applied (copied onto their tax lines)."""
    if current is None:
        return CatalogChange("tax_rate", spec.key, "create", f"create version 1 ({spec.rate} % in {spec.country})")
    stored = TaxRateSpec(spec.key, current.name, current.rate, current.inclusive, current.country, current.region)
    if stored.document() != spec.document():
        return CatalogChange(
            "tax_rate", spec.key, "new_version", f"changed: new version {current.version + 1} for invoices from now on"
        )
    return CatalogChange("tax_rate", spec.key, "unchanged", f"unchanged (version {current.version})")


def _validated(catalog_text: str, meters: dict[str, Meter]) -> CatalogSpec:
    spec = parse_catalog(
        catalog_text,
        known_meters={key: tuple(m.group_by) for key, m in meters.items()},
        known_aggregations={key: m.aggregation for key, m in meters.items()},
    )
    _check_meter_identity(spec, meters)
    return spec


@dataclass(frozen=True)
class DraftPlan:
    """A plan of a draft catalog, priced in memory (never written): what a simulation rates."""

    key: str
    name: str
    version: PlanVersion
    charges: list[tuple[PlanCharge, Meter]]


async def draft_plans(session: AsyncSession, catalog_text: str, *, as_of: datetime) -> dict[tuple[str, str], DraftPlan]:
    """Validate a draft catalog as `catalog apply` would (:class:`CatalogInvalid` lists every
    problem) and price its plans in memory, by plan key and currency (each currency option is a
    draft of its own). Meters new in the draft have no stored usage yet."""
    meters = await repository.meters_by_key(session)
    spec = _validated(catalog_text, meters)
    for meter_spec in spec.meters:
        if meter_spec.key not in meters:
            meters[meter_spec.key] = Meter(
                key=meter_spec.key,
                name=meter_spec.name,
                unit=meter_spec.unit,
                event_type=meter_spec.event_type,
                aggregation=meter_spec.aggregation,
                value_property=meter_spec.value_property,
                group_by=list(meter_spec.group_by),
                allow_negative=meter_spec.allow_negative,
                created_at=as_of,
            )
    drafts = {}
    for plan_spec in spec.plans:
        for priced in (plan_spec, *plan_spec.currency_options):
            version = PlanVersion(
                plan_id=uuid.uuid4(),
                version=0,
                currency=priced.currency,
                primary_currency=priced is plan_spec,
                interval=priced.interval,
                base_fee=priced.base_fee,
                **calendar_settings(priced),
                pricing_hash=pricing_hash(plan_spec),
                minimum_spend=priced.minimum_spend,
                invoice_threshold=priced.invoice_threshold,
                paused_usage=priced.paused_usage,
                proration=priced.proration,
                created_at=as_of,
            )
            charges = [
                (_charge_row(version.id, position, charge, meters[charge.meter]), meters[charge.meter])
                for position, charge in enumerate(priced.charges)
            ]
            drafts[plan_spec.key, priced.currency] = DraftPlan(plan_spec.key, plan_spec.name, version, charges)
    return drafts


def _check_meter_identity(spec: CatalogSpec, existing: dict[str, Meter]) -> None:
    problems = []
    for index, meter_spec in enumerate(spec.meters):
        meter = existing.get(meter_spec.key)
        if meter is None:
            continue
        for name in METER_IDENTITY:
            declared = getattr(meter_spec, name)
            stored = getattr(meter, name)
            if name == "group_by":
                declared, stored = list(declared), list(stored)
            if declared != stored:
                problems.append(
                    CatalogProblem(
                        f"meters[{index}].{name}",
                        f"meter {meter.key!r} already has {name} = {stored!r}; what a meter counts "
                        "cannot change under its past usage, so declare a new meter key instead",
                    )
                )
    if problems:
        raise CatalogInvalid(problems)


def _meter_change(spec: MeterSpec, meter: Meter | None) -> CatalogChange:
    if meter is None:
        return CatalogChange("meter", spec.key, "create", f"create ({spec.aggregation} of {spec.event_type})")
    if (meter.name, meter.unit) != (spec.name, spec.unit):
        return CatalogChange("meter", spec.key, "update", "update name or unit")
    if meter.allow_negative != spec.allow_negative:
        # Only what is accepted from now on changes: stored usage keeps its meaning.
        return CatalogChange("meter", spec.key, "update", f"allow_negative = {str(spec.allow_negative).lower()}")
    return CatalogChange("meter", spec.key, "unchanged", "unchanged")


def calendar_settings(spec: PlanSpec) -> dict[str, Any]:
    """The billing calendar and trial a plan version gives new subscriptions."""
    return {
        "billing_anchor": spec.billing_anchor,
        "trial_days": spec.trial_days,
        "trial_usage": spec.trial_usage,
        "trial_requires_payment_method": spec.trial_requires_payment_method,
    }


def pricing_hash(spec: PlanSpec) -> str:
    document = json.dumps(spec.pricing_document(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()


def _plan_change(spec: PlanSpec, plan: Plan | None, latest: PlanVersion | None) -> CatalogChange:
    if plan is None or latest is None:
        return CatalogChange("plan", spec.key, "create", "create version 1")
    if latest.pricing_hash != pricing_hash(spec):
        return CatalogChange(
            "plan",
            spec.key,
            "new_version",
            f"pricing changed: new version {latest.version + 1} (existing subscriptions stay on "
            f"version {latest.version})",
        )
    if plan.name != spec.name:
        return CatalogChange("plan", spec.key, "update", "rename (pricing unchanged)")
    return CatalogChange("plan", spec.key, "unchanged", f"unchanged (version {latest.version})")


def _write_meter(
    session: AsyncSession,
    spec: MeterSpec,
    meters: dict[str, Meter],
    change: CatalogChange,
    as_of: datetime,
) -> None:
    if change.action == "create":
        meter = Meter(
            key=spec.key,
            name=spec.name,
            unit=spec.unit,
            event_type=spec.event_type,
            aggregation=spec.aggregation,
            value_property=spec.value_property,
            group_by=list(spec.group_by),
            allow_negative=spec.allow_negative,
            created_at=as_of,
        )
        session.add(meter)
        meters[spec.key] = meter
    elif change.action == "update":
        meter = meters[spec.key]
        meter.name, meter.unit, meter.allow_negative = spec.name, spec.unit, spec.allow_negative
        session.add(meter)


async def _write_plan(
    session: AsyncSession,
    spec: PlanSpec,
    plans: dict[str, Plan],
    latest: dict[uuid.UUID, PlanVersion],
    meters: dict[str, Meter],
    change: CatalogChange,
    as_of: datetime,
) -> None:
    plan = plans.get(spec.key)
    if plan is None:
        plan = Plan(key=spec.key, name=spec.name, created_at=as_of)
        session.add(plan)
        await session.flush()
    elif plan.name != spec.name:
        plan.name = spec.name
        session.add(plan)
    if change.action not in ("create", "new_version"):
        return
    previous = latest.get(plan.id)
    version = PlanVersion(
        plan_id=plan.id,
        version=previous.version + 1 if previous else 1,
        currency=spec.currency,
        interval=spec.interval,
        base_fee=spec.base_fee,
        **calendar_settings(spec),
        pricing_hash=pricing_hash(spec),
        minimum_spend=spec.minimum_spend,
        invoice_threshold=spec.invoice_threshold,
        paused_usage=spec.paused_usage,
        proration=spec.proration,
        created_at=as_of,
    )
    session.add(version)
    # The plan's prices in other currencies: a version each, with the same number and hash.
    options = [
        PlanVersion(
            plan_id=plan.id,
            version=version.version,
            currency=option.currency,
            primary_currency=False,
            interval=option.interval,
            base_fee=option.base_fee,
            **calendar_settings(option),
            pricing_hash=version.pricing_hash,
            minimum_spend=option.minimum_spend,
            invoice_threshold=option.invoice_threshold,
            paused_usage=option.paused_usage,
            proration=option.proration,
            created_at=as_of,
        )
        for option in spec.currency_options
    ]
    session.add_all(options)
    await session.flush()  # rows have no ORM relationships, so write parents before children
    for priced, priced_version in ((spec, version), *zip(spec.currency_options, options, strict=True)):
        for position, charge in enumerate(priced.charges):
            session.add(_charge_row(priced_version.id, position, charge, meters[charge.meter]))
    await session.flush()


def _charge_row(version_id: uuid.UUID, position: int, spec: ChargeSpec, meter: Meter) -> PlanCharge:
    document = spec.pricing_document()
    return PlanCharge(
        plan_version_id=version_id,
        position=position,
        meter_id=meter.id,
        model=spec.model,
        unit_price=spec.unit_price,
        tiers=document["tiers"],
        package_size=spec.package_size,
        package_price=spec.package_price,
        included=spec.included,
        minimum=spec.minimum,
        usage_limit=spec.limit,
        where=dict(spec.where),
        rounding=spec.rounding,
        percentage_rate=spec.percentage_rate,
        fixed_fee=spec.fixed_fee,
        free_events=spec.free_events,
        per_event_minimum=spec.per_event_minimum,
        per_event_maximum=spec.per_event_maximum,
        billed=spec.billed,
    )


async def list_meters(session: AsyncSession) -> list[Meter]:
    return list((await repository.meters_by_key(session)).values())


@dataclass(frozen=True)
class PlanView:
    """A plan with its newest version and that version's charges, for the API."""

    plan: Plan
    version: PlanVersion
    charges: list[tuple[PlanCharge, Meter]]

    @property
    def base_fee(self) -> Decimal:
        return self.version.base_fee


async def list_plans(session: AsyncSession) -> list[PlanView]:
    plans = await repository.plans_by_key(session)
    latest = await repository.latest_versions(session)
    charges = await repository.charges_of(session, [v.id for v in latest.values()])
    by_version: dict[uuid.UUID, list[tuple[PlanCharge, Meter]]] = {}
    for charge, meter in charges:
        by_version.setdefault(charge.plan_version_id, []).append((charge, meter))
    return [
        PlanView(plan, latest[plan.id], by_version.get(latest[plan.id].id, []))
        for plan in plans.values()
        if plan.id in latest
    ]


def charge_terms(charge: PlanCharge) -> ChargeTerms:
    """The rating terms of a stored charge (tiers are kept as exact decimal strings)."""
    return ChargeTerms(
        model=charge.model,
        unit_price=charge.unit_price,
        tiers=tuple(
            Tier(
                None if tier["up_to"] == "inf" else Decimal(tier["up_to"]),
                Decimal(tier["unit_price"]),
                Decimal(tier.get("flat_fee", "0")),
            )
            for tier in charge.tiers
        ),
        package_size=charge.package_size,
        package_price=charge.package_price,
        included=charge.included,
        minimum=charge.minimum,
        rounding=charge.rounding,
        percentage_rate=charge.percentage_rate,
        fixed_fee=charge.fixed_fee or Decimal(0),
        free_events=charge.free_events,
        per_event_minimum=charge.per_event_minimum,
        per_event_maximum=charge.per_event_maximum,
    )


Row = TypeVar("Row", PlanVersion, PlanCharge, Meter, Plan)


def _detached(row: Row) -> Row:
    """A copy belonging to no session: a cached row must outlive the request that read it (a
    rollback expires the rows of its session, which would then try to reload)."""
    return type(row)(**row.model_dump())


# Plan versions and their charges never change (a trigger refuses it) and their ids are UUIDs,
# so they are cached for the life of the process: the entitlement hot path reads them each call.
_versions: dict[uuid.UUID, PlanVersion] = {}
_charges: dict[uuid.UUID, list[tuple[PlanCharge, Meter]]] = {}
_plans: dict[uuid.UUID, Plan] = {}  # the plan of each version (its key never changes)


async def charges_of_version(session: AsyncSession, version_id: uuid.UUID) -> list[tuple[PlanCharge, Meter]]:
    if version_id not in _charges:
        found = await repository.charges_of(session, [version_id])
        _charges[version_id] = [(_detached(charge), _detached(meter)) for charge, meter in found]
    return _charges[version_id]


async def plan_version(session: AsyncSession, version_id: uuid.UUID) -> PlanVersion:
    if version_id not in _versions:
        found = await repository.plan_versions_by_id(session, [version_id])
        plan, version = found[version_id]
        _plans[version_id], _versions[version_id] = _detached(plan), _detached(version)
    return _versions[version_id]


async def plan_of_version(session: AsyncSession, version_id: uuid.UUID) -> Plan:
    await plan_version(session, version_id)
    return _plans[version_id]


async def plan_name_of_version(session: AsyncSession, version_id: uuid.UUID) -> str:
    """The plan's name as invoices print it: "Pro v2". Names may change; invoices keep theirs."""
    version = await plan_version(session, version_id)
    return f"{_plans[version_id].name} v{version.version}"


async def meter_by_key(session: AsyncSession, key: str) -> Meter | None:
    return await repository.meter_by_key(session, key)
