"""Plan changes: immediately (prorated to the microsecond) or at the period's end, audited, idempotent.

A change writes a :class:`PlanChange` row (the audit: who, when, from what, to what, at what cost)
and a :class:`SubscriptionPhase` from its effective moment; the billing run reads the phases to rate
each part of a period on its own version, and works out the period's prorations from the phases as
they stand when it is invoiced. A change replaces the phases from its moment on: an immediate change
cancels a change scheduled for the period's end, and a back-dated one the changes after it.
What a change costs is worked out by the caller's ``prorate`` (billing knows what was billed in
advance), from the phases the change leaves, so the dry run and the invoice agree.
A change drops the customer's price overrides in effect at its moment (:mod:`customers.price_overrides`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository
from customers.calendar import check_anchor_day, schedule_of
from customers.errors import CustomerNotFound, InvalidInput, PlanNotFound, SameVersion
from customers.lifecycle import check_plan_change, status_on
from customers.models import PlanChange, Subscription, SubscriptionPhase
from customers.price_overrides import drop_for_plan_change
from customers.selection import check_meters_free, lock_customer, lock_subscription
from customers.webhook_payloads import subscription_event
from ledger import audit
from ledger.errors import IdempotencyKeyReused
from notifications.webhook_events import emit
from pricing import repository as catalog
from pricing.models import Plan, PlanVersion
from pricing.proration import Proration
from pricing.service import plan_version

TIMINGS = ("IMMEDIATELY", "PERIOD_END")

#: The base-fee prorations of the period ``[start, end)`` of a subscription with these phases.
ProrationsOf = Callable[[Subscription, list[SubscriptionPhase], datetime, datetime], Awaitable[list[Proration]]]


@dataclass(frozen=True)
class PlanChangeRequest:
    customer_id: uuid.UUID
    plan_key: str
    timing: str
    idempotency_key: str
    actor: str
    at: datetime | None = None
    subscription_id: uuid.UUID | None = None  # required when the customer has several


@dataclass(frozen=True)
class PlanChangeOutcome:
    subscription: Subscription
    prorations: list[Proration]
    currency: str
    effective_at: datetime
    change: PlanChange | None  # None for a dry run
    starts_calendar: bool = False  # a change of billing interval: the period in progress ends at it


def _request_hash(request: PlanChangeRequest, at: datetime) -> str:
    document = {"customer": str(request.customer_id), "plan": request.plan_key, "timing": request.timing}
    if request.subscription_id is not None:
        document["subscription"] = str(request.subscription_id)
    if request.timing == "IMMEDIATELY":
        document["at"] = at.isoformat()
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def change_plan(
    session: AsyncSession,
    request: PlanChangeRequest,
    *,
    as_of: datetime,
    prorate: ProrationsOf,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
) -> PlanChangeOutcome:
    """Move a customer to the newest version of ``plan_key``; ``dry_run`` computes the same
    outcome and writes nothing. The same idempotency key with the same request returns the first
    outcome; with another request it is refused. The outcome's prorations are those of the whole
    current period once the change is made (a back-dated change replaces the changes after it).
    ``at`` may lie at most ``backdate_limit`` before ``as_of`` (the API's TALLY_BACKDATE_MAX_DAYS).
    Tells the product ``subscription.changed`` when the change is made, a change at the period's
    end too (its data then shows the ``scheduledChange``)."""
    if request.timing not in TIMINGS:
        raise InvalidInput(f"must be one of {', '.join(TIMINGS)}", field="effective")
    if not dry_run and not (request.idempotency_key or "").strip():
        raise InvalidInput("is required", field="idempotencyKey")
    at = request.at or as_of
    if at.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field="at")
    if backdate_limit is not None and at < as_of - backdate_limit:
        raise InvalidInput(
            f"must be at most {backdate_limit.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="at"
        )
    subscription = await lock_subscription(session, request.customer_id, request.subscription_id)
    if subscription is None:
        if await repository.get_by_ids(session, [request.customer_id]):
            raise InvalidInput("the customer has no subscription to change; subscribe them first", field="customerId")
        raise CustomerNotFound()
    request_hash = _request_hash(request, at)
    if not dry_run:
        existing = await repository.plan_change_by_key(session, request.idempotency_key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyKeyReused()
            return await _outcome_of(session, subscription, existing)

    current_version = await plan_version(session, subscription.version_at(as_of))
    found = await catalog.latest_version_of(session, request.plan_key, current_version.currency)
    if found is None:
        raise PlanNotFound(request.plan_key)
    new_plan, new_version = found
    phases = await repository.phases_of(session, subscription.id)
    period = (await schedule_of(session, subscription, phases)).period_containing(as_of)
    period_start, period_end = period.start, period.end
    _check_change(new_plan, new_version, current_version, at, period_start, period_end)
    if subscription.billing_anchor_day is not None and new_version.interval != current_version.interval:
        try:
            check_anchor_day(subscription.billing_anchor_day, new_version.interval)
        except InvalidInput as error:
            raise InvalidInput(f"the subscription's billing anchor day {error.message}", field="planKey") from None
    effective_at = period_end if request.timing == "PERIOD_END" else at
    if phases and effective_at <= phases[0].starts_at:
        raise InvalidInput("must be after the subscription started", field="at")
    check_plan_change(phases, effective_at)
    # Each meter's usage belongs to one subscription: the new plan may not charge another's.
    await lock_customer(session, request.customer_id)
    await check_meters_free(
        session, request.customer_id, new_version.id, from_moment=effective_at, besides=subscription.id
    )
    status = status_on(phases, effective_at)  # a change made while paused starts paused
    phases_before = [phase for phase in phases if phase.starts_at < effective_at]
    from_version_id = phases_before[-1].plan_version_id if phases_before else subscription.version_at(as_of)
    # A change of billing interval starts a calendar at its moment (the period in progress ends
    # there), except inside a trial: the first paid period then simply has the new interval.
    from_interval = (await plan_version(session, from_version_id)).interval
    starts_calendar = new_version.interval != from_interval and not subscription.in_trial(effective_at)
    new_anchor = effective_at if starts_calendar else None
    phases_after = [
        *phases_before,
        SubscriptionPhase(
            subscription_id=subscription.id,
            customer_id=request.customer_id,
            starts_at=effective_at,
            plan_version_id=new_version.id,
            status=status,
            billing_anchor=new_anchor,
        ),
    ]
    prorations = (
        [] if request.timing == "PERIOD_END" else await prorate(subscription, phases_after, period_start, period_end)
    )
    if dry_run:
        return PlanChangeOutcome(subscription, prorations, new_version.currency, effective_at, None, starts_calendar)

    change = PlanChange(
        customer_id=request.customer_id,
        subscription_id=subscription.id,
        from_plan_version_id=from_version_id,
        to_plan_version_id=new_version.id,
        timing=request.timing,
        effective_at=effective_at,
        period_start=period_start,
        period_end=period_end,
        prorations=[proration_record(p) for p in prorations],
        status="scheduled" if request.timing == "PERIOD_END" else "applied",
        actor=request.actor,
        idempotency_key=request.idempotency_key,
        request_hash=request_hash,
        requested_at=as_of,
    )
    session.add(change)
    await session.flush()
    await repository.cancel_plan_changes(
        session, await repository.drop_phases_from(session, subscription.id, effective_at)
    )
    await drop_for_plan_change(session, subscription, change)
    session.add(
        SubscriptionPhase(
            subscription_id=subscription.id,
            customer_id=request.customer_id,
            starts_at=effective_at,
            plan_version_id=new_version.id,
            plan_change_id=change.id,
            status=status,
            billing_anchor=new_anchor,
        )
    )
    _apply_to_subscription(subscription, new_version.id, effective_at, as_of, new_anchor)
    # A back-dated change may have dropped a calendar started after it: the one in effect now is
    # the last one the phases still start.
    anchors = [p.billing_anchor for p in phases_after if p.billing_anchor is not None and p.starts_at <= as_of]
    if anchors:
        subscription.billing_anchor = anchors[-1]
    session.add(subscription)
    await session.flush()
    key = f"subscription.changed:{change.id}"
    told = await subscription_event(session, "subscription.changed", key, subscription, as_of=as_of)
    await emit(session, told, as_of=as_of)
    await audit.record(
        session,
        actor=request.actor,
        action="subscription.change_plan",
        subject_type="Subscription",
        subject_id=subscription.id,
        customer_id=request.customer_id,
        as_of=as_of,
        before={"plan_version": from_version_id},
        after={"plan_version": new_version.id, "timing": request.timing, "effective_at": effective_at},
    )
    return PlanChangeOutcome(subscription, prorations, new_version.currency, effective_at, change, starts_calendar)


def _check_change(
    new_plan: Plan,
    new_version: PlanVersion,
    current: PlanVersion,
    at: datetime,
    period_start: datetime,
    period_end: datetime,
) -> None:
    if new_version.id == current.id:
        raise SameVersion(
            f"the customer is already on {new_plan.key} version {new_version.version}",
            field="planKey",
        )
    if new_version.currency != current.currency:
        raise InvalidInput(
            f"plan {new_plan.key!r} is priced in {new_version.currency}, the customer in {current.currency}",
            field="planKey",
        )
    if not period_start <= at < period_end:
        raise InvalidInput(
            f"must be inside the current billing period [{period_start.isoformat()}, {period_end.isoformat()})",
            field="at",
        )


def _apply_to_subscription(
    subscription: Subscription,
    version_id: uuid.UUID,
    effective_at: datetime,
    as_of: datetime,
    billing_anchor: datetime | None = None,
) -> None:
    """Keep the subscription row's one-read view in step with the phases: a scheduled change whose
    moment has passed is folded in; one after ``effective_at`` was dropped with its phase. A
    change that starts a calendar (``billing_anchor``) moves the anchor with its version."""
    subscription.billing_anchor = subscription.billing_anchor_at(as_of)
    subscription.plan_version_id = subscription.version_at(as_of)
    subscription.pending_plan_version_id = subscription.pending_change_at = None
    subscription.pending_billing_anchor = None
    if effective_at <= as_of:
        subscription.plan_version_id = version_id
        subscription.billing_anchor = billing_anchor or subscription.billing_anchor
    else:
        subscription.pending_plan_version_id, subscription.pending_change_at = version_id, effective_at
        subscription.pending_billing_anchor = billing_anchor
        if billing_anchor is not None and subscription.period_closes_at is not None:
            # The period in progress now closes at the change: let the billing run see it then.
            subscription.period_closes_at = min(subscription.period_closes_at, billing_anchor)


def proration_record(proration: Proration) -> dict[str, str | None]:
    """A proration as the change's audit keeps it (JSON)."""
    return {
        "kind": proration.kind,
        "description": proration.description,
        "amount": str(proration.amount),
        "starts_at": proration.starts_at.isoformat() if proration.starts_at else None,
        "plan_version_id": str(proration.plan_version_id) if proration.plan_version_id else None,
    }


def _proration_of_record(record: dict[str, str | None]) -> Proration:
    starts_at, version_id = record.get("starts_at"), record.get("plan_version_id")
    return Proration(
        str(record["kind"]),
        str(record["description"]),
        Decimal(str(record["amount"])),
        datetime.fromisoformat(starts_at) if starts_at else None,
        uuid.UUID(version_id) if version_id else None,
    )


async def _outcome_of(session: AsyncSession, subscription: Subscription, change: PlanChange) -> PlanChangeOutcome:
    version = await plan_version(session, change.to_plan_version_id)
    prorations = [_proration_of_record(p) for p in change.prorations]
    return PlanChangeOutcome(subscription, prorations, version.currency, change.effective_at, change)


async def phases_of(session: AsyncSession, subscription_id: uuid.UUID) -> list[SubscriptionPhase]:
    return await repository.phases_of(session, subscription_id)


@dataclass(frozen=True)
class PhasePart:
    """A part of a period, the plan version pricing it and the subscription's status then."""

    start: datetime
    end: datetime
    version_id: uuid.UUID
    status: str


def phase_parts(phases: list[SubscriptionPhase], start: datetime, end: datetime) -> list[PhasePart]:
    """The parts of ``[start, end)`` with their version and status (phases sorted by start)."""
    parts = []
    for index, phase in enumerate(phases):
        phase_end = phases[index + 1].starts_at if index + 1 < len(phases) else end
        part_start, part_end = max(phase.starts_at, start), min(phase_end, end)
        if part_start < part_end:
            parts.append(PhasePart(part_start, part_end, phase.plan_version_id, phase.status))
    return parts


def version_on(phases: list[SubscriptionPhase], moment: datetime) -> uuid.UUID:
    """The plan version in effect at ``moment`` (the first phase's before the subscription began)."""
    current = phases[0].plan_version_id
    for phase in phases:
        if phase.starts_at <= moment:
            current = phase.plan_version_id
    return current


async def plan_changes(session: AsyncSession, customer_id: uuid.UUID, *, limit: int = 20) -> list[PlanChange]:
    return await repository.plan_changes_of(session, customer_id, limit=limit)
