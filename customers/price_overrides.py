"""Per-customer prices: a subscription overrides charges of its plan version without forking the
plan; versioned (each change a new row, effective from a moment), audited, idempotent.

An override belongs to one charge of one plan version. It may start anywhere in the current
billing period (back-dated as far as TALLY_BACKDATE_MAX_DAYS allows, and not before the last plan
change) or at its end; usage is rated on it from that moment (:mod:`pricing.overrides`). A plan
change drops the overrides in effect when it takes effect: it writes a ``remove`` for each, naming
the change, so the change's audit lists them and a return to the old version brings none back.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import price_override_repository as overrides_sql
from customers import repository
from customers.calendar import current_period
from customers.errors import ChargeNotInPlan, CustomerNotFound, InvalidInput, NoOverride, NoSubscription
from customers.models import PlanChange, PriceOverride, Subscription, SubscriptionPhase
from customers.selection import lock_subscription
from ledger.errors import IdempotencyKeyReused
from pricing.models import Meter, PlanCharge
from pricing.overrides import (
    NO_OVERRIDES,
    OverrideFields,
    OverrideStep,
    OverrideTimeline,
    overridden_charge,
    override_terms,
    plan_terms,
)
from pricing.service import charges_of_version, plan_name_of_version, plan_version

MAX_REASON_LENGTH = 500
# The place of a dry run's change in the recorded order: after every real one.
UNRECORDED = 2**62


@dataclass(frozen=True)
class ChargeSelector:
    """Which charge of the plan: its id, or its meter's key (and its position in the plan when
    the plan charges that meter more than once)."""

    charge_id: str | None = None
    meter_key: str | None = None
    position: int | None = None


@dataclass(frozen=True)
class PriceOverrideRequest:
    customer_id: uuid.UUID
    charge: ChargeSelector
    fields: OverrideFields | None  # None: remove the override, back to the plan's price
    reason: str
    idempotency_key: str
    actor: str
    effective_at: datetime | None = None  # default: now
    subscription_id: uuid.UUID | None = None  # required when the customer has several


@dataclass(frozen=True)
class PriceOverrideOutcome:
    change: PriceOverride  # as written, as first written (a retry), or not written (a dry run)
    charge: PlanCharge  # the plan's charge
    meter: Meter
    subscription: Subscription
    currency: str
    before: OverrideTimeline  # the customer's overrides without this change…
    after: OverrideTimeline  # …and with it


def step_of(row: PriceOverride) -> OverrideStep:
    assert row.seq is not None
    terms = row.terms if row.action == "set" else None
    return OverrideStep(row.plan_charge_id, row.effective_at, row.seq, terms, drop=row.plan_change_id is not None)


async def overrides_of(session: AsyncSession, subscription: Subscription) -> OverrideTimeline:
    """The subscription's overrides; no query for a subscription that never had one."""
    if not subscription.has_price_overrides:
        return NO_OVERRIDES
    rows = await overrides_sql.live_overrides(session, subscription.customer_id, subscription.id)
    return OverrideTimeline(tuple(step_of(row) for row in rows))


async def overrides_of_customer(session: AsyncSession, customer_id: uuid.UUID) -> OverrideTimeline:
    """The overrides of all the customer's subscriptions: each names a charge of its own plan."""
    return OverrideTimeline(tuple(step_of(row) for row in await overrides_sql.live_overrides(session, customer_id)))


async def overrides_with_rows(
    session: AsyncSession, subscription: Subscription
) -> tuple[OverrideTimeline, dict[int, PriceOverride]]:
    """The subscription's overrides and the rows behind their steps (by ``seq``), for display."""
    if not subscription.has_price_overrides:
        return NO_OVERRIDES, {}
    rows = await overrides_sql.live_overrides(session, subscription.customer_id, subscription.id)
    return OverrideTimeline(tuple(step_of(row) for row in rows)), {row.seq: row for row in rows if row.seq}


async def history(session: AsyncSession, customer_id: uuid.UUID, *, limit: int = 50) -> list[PriceOverride]:
    return await overrides_sql.history(session, customer_id, limit=limit)


async def dropped_by(
    session: AsyncSession, plan_change_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[PriceOverride]]:
    return await overrides_sql.dropped_by(session, list(plan_change_ids))


def _request_hash(request: PriceOverrideRequest) -> str:
    document = {
        "customer": str(request.customer_id),
        "charge": asdict(request.charge),
        "fields": None if request.fields is None else asdict(request.fields),
        "effective_at": request.effective_at.isoformat() if request.effective_at else None,
        "reason": request.reason.strip(),
    }
    if request.subscription_id is not None:
        document["subscription"] = str(request.subscription_id)
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


async def change_price_override(
    session: AsyncSession,
    request: PriceOverrideRequest,
    *,
    as_of: datetime,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
) -> PriceOverrideOutcome:
    """Set (``request.fields``) or remove a customer's override of one charge of their plan.

    Checks everything before writing anything; a refusal is an :class:`InvalidInput` naming the
    field. The same idempotency key with the same request returns the first outcome; with another
    request it is refused. ``dry_run`` works out the same outcome and writes nothing."""
    key = (request.idempotency_key or "").strip()
    if not dry_run and not key:
        raise InvalidInput("is required", field="idempotencyKey")
    reason = (request.reason or "").strip()
    if not reason:
        raise InvalidInput("is required: say why this customer pays another price", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"must be at most {MAX_REASON_LENGTH} characters", field="reason")
    if request.effective_at is not None and request.effective_at.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field="effectiveAt")
    subscription = await lock_subscription(session, request.customer_id, request.subscription_id)
    if subscription is None:
        if await repository.get_by_ids(session, [request.customer_id]):
            raise NoSubscription(
                "the customer has no subscription whose prices could be overridden; subscribe them first",
                field="customerId",
            )
        raise CustomerNotFound()
    timeline = await overrides_of(session, subscription)
    request_hash = _request_hash(request)
    if not dry_run:
        existing = await overrides_sql.override_by_key(session, key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyKeyReused()
            return await _replayed(session, existing, subscription, timeline)

    phases = await repository.phases_of(session, subscription.id)
    at = request.effective_at or as_of
    version_id = await _check_moment(session, subscription, phases, at, as_of=as_of, backdate_limit=backdate_limit)
    charge, meter = await _selected_charge(session, request.charge, version_id)
    currency = (await plan_version(session, charge.plan_version_id)).currency
    in_effect = timeline.in_effect(charge.id, at)
    if request.fields is None:
        if in_effect is None:
            raise NoOverride(
                f"the customer pays the plan's price for this charge at {at.isoformat()}: there is no override "
                "to remove",
                field="charge",
            )
        terms: dict[str, object] = {}
    else:
        terms = override_terms(charge, request.fields, currency)
    row = PriceOverride(
        customer_id=request.customer_id,
        subscription_id=subscription.id,
        plan_version_id=charge.plan_version_id,
        plan_charge_id=charge.id,
        action="remove" if request.fields is None else "set",
        terms=terms,
        before=plan_terms(overridden_charge(charge, in_effect)),
        after=plan_terms(overridden_charge(charge, terms)),
        effective_at=at,
        reason=reason,
        actor=request.actor,
        idempotency_key=key or f"dry-run:{uuid.uuid4()}",
        request_hash=request_hash,
        recorded_at=as_of,
    )
    if dry_run:
        step = OverrideStep(charge.id, at, UNRECORDED, terms or None)
        return PriceOverrideOutcome(row, charge, meter, subscription, currency, timeline, timeline.with_step(step))
    session.add(row)
    subscription.has_price_overrides = True
    session.add(subscription)
    await session.flush()
    return PriceOverrideOutcome(row, charge, meter, subscription, currency, timeline, timeline.with_step(step_of(row)))


async def _replayed(
    session: AsyncSession, row: PriceOverride, subscription: Subscription, timeline: OverrideTimeline
) -> PriceOverrideOutcome:
    charge, meter = await _charge_of_version(session, row.plan_version_id, row.plan_charge_id)
    currency = (await plan_version(session, row.plan_version_id)).currency
    assert row.seq is not None
    return PriceOverrideOutcome(row, charge, meter, subscription, currency, timeline.without(row.seq), timeline)


def _version_on(phases: list[SubscriptionPhase], moment: datetime) -> uuid.UUID:
    current = phases[0].plan_version_id
    for phase in phases:
        if phase.starts_at <= moment:
            current = phase.plan_version_id
    return current


async def _check_moment(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    at: datetime,
    *,
    as_of: datetime,
    backdate_limit: timedelta | None,
) -> uuid.UUID:
    """``at`` must lie in the current period (or be its end: the next period's start), not before
    the last plan change: invoiced usage is never re-priced, and an override belongs to the plan
    version in effect at its moment, which is returned."""
    version = await plan_version(session, subscription.version_at(as_of))
    current = current_period(subscription, version.interval, as_of)
    period_start, period_end = current.start, current.end
    if not period_start <= at <= period_end:
        raise InvalidInput(
            f"must be inside the current billing period [{period_start.isoformat()}, {period_end.isoformat()}] "
            "(invoiced periods are never re-priced)",
            field="effectiveAt",
        )
    if backdate_limit is not None and at < as_of - backdate_limit:
        raise InvalidInput(
            f"must be at most {backdate_limit.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="effectiveAt"
        )
    changed = [phase.starts_at for phase in phases if at < phase.starts_at <= as_of]
    if changed:
        raise InvalidInput(
            f"must not be before the plan change of {changed[-1].isoformat()}: an override belongs to the plan "
            "version in effect",
            field="effectiveAt",
        )
    return _version_on(phases, at) if phases else subscription.version_at(at)


async def _selected_charge(
    session: AsyncSession, selector: ChargeSelector, version_id: uuid.UUID
) -> tuple[PlanCharge, Meter]:
    charges = await charges_of_version(session, version_id)
    plan = await plan_name_of_version(session, version_id)
    if selector.charge_id is not None:
        found = [(c, m) for c, m in charges if str(c.id) == selector.charge_id.strip()]
        if not found:
            raise ChargeNotInPlan(
                f"{selector.charge_id!r} is not a charge of the customer's plan ({plan}): an override belongs "
                "to a charge of the version the customer is on",
                field="charge",
            )
        return found[0]
    if selector.meter_key is None and selector.position is None:
        raise InvalidInput("give the charge's id, or its meter key (and position)", field="charge")
    found = [
        (c, m)
        for c, m in charges
        if (selector.meter_key is None or m.key == selector.meter_key.strip())
        and (selector.position is None or c.position == selector.position)
    ]
    if not found:
        what = f"on meter {selector.meter_key!r}" if selector.meter_key is not None else ""
        where = f" at position {selector.position}" if selector.position is not None else ""
        raise ChargeNotInPlan(
            f"the customer's plan ({plan}) has no charge {what}{where}".replace("  ", " "),
            field="charge",
        )
    if len(found) > 1:
        positions = ", ".join(str(c.position) for c, _ in found)
        raise InvalidInput(
            f"the plan charges meter {selector.meter_key!r} {len(found)} times: give its position ({positions})",
            field="charge",
        )
    return found[0]


async def _charge_of_version(
    session: AsyncSession, version_id: uuid.UUID, charge_id: uuid.UUID
) -> tuple[PlanCharge, Meter]:
    return next((c, m) for c, m in await charges_of_version(session, version_id) if c.id == charge_id)


async def drop_for_plan_change(
    session: AsyncSession, subscription: Subscription, change: PlanChange
) -> list[PriceOverride]:
    """Write a ``remove`` of every override in effect when ``change`` takes effect (or scheduled
    after it): an override belongs to the plan version the customer leaves. The rows name the
    change, so its audit lists what it dropped. Nothing is read for a subscription that never
    had an override."""
    if not subscription.has_price_overrides:
        return []
    rows = await overrides_sql.live_overrides(session, subscription.customer_id, subscription.id)
    timeline = OverrideTimeline(tuple(step_of(row) for row in rows))
    version_of = {row.plan_charge_id: row.plan_version_id for row in rows}
    at = change.effective_at
    plan = await plan_name_of_version(session, change.to_plan_version_id)
    dropped = []
    for charge_id, version_id in version_of.items():
        in_effect = timeline.in_effect(charge_id, at)
        if in_effect is None and not timeline.changes_after(charge_id, at):
            continue
        charge, _ = await _charge_of_version(session, version_id, charge_id)
        row = PriceOverride(
            customer_id=subscription.customer_id,
            subscription_id=subscription.id,
            plan_version_id=version_id,
            plan_charge_id=charge.id,
            action="remove",
            terms={},
            before=plan_terms(overridden_charge(charge, in_effect)),
            after=plan_terms(charge),
            effective_at=at,
            reason=f"dropped by the plan change to {plan}: an override belongs to the plan version it was set on",
            actor=change.actor,
            plan_change_id=change.id,
            idempotency_key=f"plan-change:{change.id}:{charge.id}",
            request_hash=change.request_hash,
            recorded_at=change.requested_at,
        )
        session.add(row)
        dropped.append(row)
    if dropped:
        await session.flush()
    return dropped
