"""A subscription's lifecycle: cancel (now, or at the period's end), resume a scheduled cancel,
pause and unpause. Audited and idempotent, like plan changes.

Each request becomes a phase (:class:`SubscriptionPhase` with a status), so billing prices the
period from the phases as for a plan change: a PAUSED part bills no base fee, a CANCELED part
nothing at all, and the telescoping prorations credit what was billed in advance. The subscription
row keeps the state in one read for the hot paths (``cancel_at``, ``paused_at``), and a
:class:`SubscriptionEvent` row is the audit: who, why, when, at what cost.

The rules, written once:
- Moments (``at`` of a pause, an unpause, an immediate cancel) lie in the current billing period,
  at most ``backdate_limit`` back, never in the future, and after every phase already begun (a
  lifecycle event is never slipped under a later one). A cancel at the period's end takes effect
  at the period's end.
- A canceled subscription (or one whose cancel is scheduled) cannot be canceled again, paused,
  unpaused or moved to another plan; only a scheduled cancel can be resumed, before it happens.
- A plan change scheduled for a period's end is dropped by a cancel (its audit reads canceled);
  one scheduled while paused starts paused, and an unpause makes it active again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository
from customers.calendar import current_period
from customers.errors import (
    AlreadyCanceled,
    AlreadyPaused,
    CustomerNotFound,
    InTrial,
    InvalidInput,
    NoSubscription,
    NothingScheduled,
    NotPaused,
    SubscriptionCanceled,
)
from customers.models import Subscription, SubscriptionEvent, SubscriptionPhase
from customers.selection import lock_subscription
from customers.webhook_payloads import subscription_event
from ledger import audit
from ledger.errors import IdempotencyKeyReused
from notifications.webhook_events import emit
from pricing.service import plan_version

ACTIVE, PAUSED, CANCELED = "ACTIVE", "PAUSED", "CANCELED"
CANCEL, RESUME, PAUSE, UNPAUSE = "CANCEL", "RESUME", "PAUSE", "UNPAUSE"
KINDS = (CANCEL, RESUME, PAUSE, UNPAUSE)
CANCEL_TIMINGS = ("IMMEDIATELY", "PERIOD_END")
MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class LifecycleRequest:
    customer_id: uuid.UUID
    kind: str  # CANCEL, RESUME, PAUSE, UNPAUSE
    idempotency_key: str
    actor: str
    timing: str | None = None  # a cancel's: IMMEDIATELY or PERIOD_END
    at: datetime | None = None  # defaults to now; not for a cancel at the period's end or a resume
    reason: str | None = None
    subscription_id: uuid.UUID | None = None  # required when the customer has several


@dataclass(frozen=True)
class LifecycleChange:
    """What a request does, worked out before anything is written: the phases it leaves, the
    moment it takes effect and the billing period it falls in. ``replayed`` is the first outcome's
    audit row when the request is a retry (then nothing is to be written)."""

    subscription: Subscription
    phases: list[SubscriptionPhase]
    effective_at: datetime
    period_start: datetime
    period_end: datetime
    replayed: SubscriptionEvent | None = None


def status_on(phases: list[SubscriptionPhase], moment: datetime) -> str:
    """The subscription's status at ``moment`` (its first phase's before it began)."""
    current = phases[0].status if phases else ACTIVE
    for phase in phases:
        if phase.starts_at <= moment:
            current = phase.status
    return current


def cancel_moment(phases: list[SubscriptionPhase]) -> datetime | None:
    """When the subscription ends (past or scheduled); None when it is not canceled."""
    return next((phase.starts_at for phase in phases if phase.status == CANCELED), None)


def subscription_status(subscription: Subscription, as_of: datetime) -> str:
    """ACTIVE, PAUSED or CANCELED at ``as_of``, from the subscription row alone."""
    return subscription.status_at(as_of)


def check_plan_change(phases: list[SubscriptionPhase], effective_at: datetime) -> None:
    """A plan change must not touch a canceled subscription, nor slip under a pause or an unpause
    (a back-dated change replaces the phases after it, which would undo them)."""
    ends = cancel_moment(phases)
    if ends is not None:
        raise SubscriptionCanceled(
            f"the subscription is canceled from {ends.isoformat()}; a canceled subscription keeps its plan",
            field="customerId",
        )
    lifecycle = [phase.starts_at for phase in phases if phase.lifecycle_event_id is not None]
    if lifecycle and effective_at <= max(lifecycle):
        raise InvalidInput(
            f"must be after the subscription's last pause or unpause ({max(lifecycle).isoformat()})", field="at"
        )


def _request_hash(request: LifecycleRequest, reason: str | None) -> str:
    document = {
        "customer": str(request.customer_id),
        "kind": request.kind,
        "timing": request.timing,
        "at": request.at.astimezone(UTC).isoformat() if request.at else None,
        "reason": reason,
    }
    if request.subscription_id is not None:
        document["subscription"] = str(request.subscription_id)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _reason(request: LifecycleRequest) -> str | None:
    reason = (request.reason or "").strip() or None
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"must be at most {MAX_REASON_LENGTH} characters", field="reason")
    if reason is not None and request.kind != CANCEL:
        raise InvalidInput("only a cancel records a reason", field="reason")
    return reason


def _check_request(request: LifecycleRequest, *, dry_run: bool) -> None:
    if request.kind not in KINDS:
        raise InvalidInput(f"must be one of {', '.join(KINDS)}", field="kind")
    if request.kind == CANCEL and request.timing not in CANCEL_TIMINGS:
        raise InvalidInput(f"must be one of {', '.join(CANCEL_TIMINGS)}", field="timing")
    if not dry_run and not (request.idempotency_key or "").strip():
        raise InvalidInput("is required", field="idempotencyKey")
    if request.at is not None:
        if request.at.tzinfo is None:
            raise InvalidInput("must carry a time zone offset", field="at")
        if request.kind == RESUME or request.timing == "PERIOD_END":
            raise InvalidInput("give no moment: it takes effect at the period's end", field="at")


def _check_moment(
    at: datetime,
    phases: list[SubscriptionPhase],
    *,
    as_of: datetime,
    period_start: datetime,
    backdate_limit: timedelta | None,
) -> None:
    if at > as_of:
        raise InvalidInput("must not be in the future", field="at")
    if backdate_limit is not None and at < as_of - backdate_limit:
        raise InvalidInput(
            f"must be at most {backdate_limit.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="at"
        )
    if at < period_start:
        raise InvalidInput(f"must be inside the current billing period (from {period_start.isoformat()})", field="at")
    begun = [phase.starts_at for phase in phases if phase.starts_at <= as_of]
    if begun and at <= max(begun):
        raise InvalidInput(
            f"must be after the subscription's start or its last change ({max(begun).isoformat()})", field="at"
        )


def _check_state(kind: str, phases: list[SubscriptionPhase], as_of: datetime) -> None:
    ends = cancel_moment(phases)
    if kind == CANCEL and ends is not None:
        scheduled = "; resume it first to cancel it otherwise" if ends > as_of else ""
        raise AlreadyCanceled(f"the subscription is already canceled from {ends.isoformat()}{scheduled}")
    if ends is not None and ends <= as_of:
        raise SubscriptionCanceled(f"the subscription was canceled at {ends.isoformat()}", field="customerId")
    now = status_on(phases, as_of)
    if kind == RESUME and ends is None:
        raise NothingScheduled("no cancel is scheduled: there is nothing to resume")
    if kind == PAUSE and now == PAUSED:
        raise AlreadyPaused("the subscription is already paused")
    if kind == UNPAUSE and now != PAUSED:
        raise NotPaused("the subscription is not paused")


def _phase(
    subscription: Subscription, starts_at: datetime, phases: list[SubscriptionPhase], status: str
) -> SubscriptionPhase:
    version_id = phases[0].plan_version_id
    for phase in phases:
        if phase.starts_at <= starts_at:
            version_id = phase.plan_version_id
    return SubscriptionPhase(
        subscription_id=subscription.id,
        customer_id=subscription.customer_id,
        starts_at=starts_at,
        plan_version_id=version_id,
        status=status,
    )


def _with_status(phase: SubscriptionPhase, status: str) -> SubscriptionPhase:
    return SubscriptionPhase(
        subscription_id=phase.subscription_id,
        customer_id=phase.customer_id,
        starts_at=phase.starts_at,
        plan_version_id=phase.plan_version_id,
        plan_change_id=phase.plan_change_id,
        status=status,
        lifecycle_event_id=phase.lifecycle_event_id,
    )


def phases_after(
    kind: str, phases: list[SubscriptionPhase], subscription: Subscription, effective_at: datetime
) -> list[SubscriptionPhase]:
    """The phases once the request is made (pure): a cancel drops what was scheduled from its
    moment on; a pause or unpause carries its status into the phases scheduled after it."""
    before = [phase for phase in phases if phase.starts_at < effective_at]
    later = [phase for phase in phases if phase.starts_at > effective_at]
    if kind == CANCEL:
        return [*before, _phase(subscription, effective_at, before, CANCELED)]
    if kind == RESUME:
        return [phase for phase in phases if phase.status != CANCELED]
    status, was = (PAUSED, ACTIVE) if kind == PAUSE else (ACTIVE, PAUSED)
    carried = [_with_status(phase, status) if phase.status == was else phase for phase in later]
    return [*before, _phase(subscription, effective_at, phases, status), *carried]


async def plan_lifecycle_change(
    session: AsyncSession,
    request: LifecycleRequest,
    *,
    as_of: datetime,
    backdate_limit: timedelta | None = None,
    dry_run: bool = False,
) -> LifecycleChange:
    """Check a request and work out the phases it leaves; lock the subscription for the caller's
    transaction. Nothing is written. A retried request (same key, same request) is answered with
    its first audit row; the same key with another request is refused."""
    _check_request(request, dry_run=dry_run)
    reason = _reason(request)
    subscription = await lock_subscription(session, request.customer_id, request.subscription_id)
    if subscription is None:
        if await repository.get_by_ids(session, [request.customer_id]):
            raise NoSubscription("the customer has no subscription", field="customerId")
        raise CustomerNotFound()
    phases = await repository.phases_of(session, subscription.id)
    version = await plan_version(session, subscription.version_at(as_of))
    current = current_period(subscription, version.interval, as_of)
    period_start, period_end = current.start, current.end
    if not dry_run:
        existing = await repository.subscription_event_by_key(session, request.idempotency_key)
        if existing is not None:
            if existing.request_hash != _request_hash(request, reason) or existing.customer_id != request.customer_id:
                raise IdempotencyKeyReused()
            return LifecycleChange(subscription, phases, existing.effective_at, period_start, period_end, existing)
    _check_state(request.kind, phases, as_of)
    if request.kind == RESUME:
        effective_at = cancel_moment(phases) or as_of
    elif request.kind == CANCEL and request.timing == "PERIOD_END":
        effective_at = period_end
    else:
        effective_at = request.at or as_of
        _check_moment(effective_at, phases, as_of=as_of, period_start=period_start, backdate_limit=backdate_limit)
    if request.kind == PAUSE and subscription.in_trial(effective_at):
        # A trial bills no fee to pause, and its end starts the first paid period: stopping its
        # clock is what an extension does, with the new end stated.
        raise InTrial("a trial cannot be paused: extend it (extendTrial) or end it first")
    after = phases_after(request.kind, phases, subscription, effective_at)
    return LifecycleChange(subscription, after, effective_at, period_start, period_end)


async def record_lifecycle_change(
    session: AsyncSession,
    request: LifecycleRequest,
    change: LifecycleChange,
    *,
    as_of: datetime,
    prorations: list[dict[str, str | None]],
    dry_run: bool = False,
) -> SubscriptionEvent:
    """Write the request: its audit row, its phases and the subscription row's view of them.
    A dry run writes too, under a key of its own, for its caller to roll back."""
    customer_id, effective_at, kind = request.customer_id, change.effective_at, request.kind
    reason = _reason(request)
    event = SubscriptionEvent(
        customer_id=customer_id,
        subscription_id=change.subscription.id,
        kind=kind,
        timing=request.timing if kind == CANCEL else None,
        effective_at=effective_at,
        reason=reason,
        status="scheduled" if effective_at > as_of and kind == CANCEL else "applied",
        prorations=prorations,
        invoice_ids=[],
        actor=request.actor,
        idempotency_key=f"dry-run:{uuid.uuid4()}" if dry_run else request.idempotency_key,
        request_hash=_request_hash(request, reason),
        requested_at=as_of,
    )
    session.add(event)
    await session.flush()
    subscription = change.subscription
    if kind == RESUME:
        await repository.drop_phases_from(session, subscription.id, effective_at)
        await repository.revoke_scheduled_cancels(session, subscription.id)
        subscription.cancel_at = subscription.canceled_at = subscription.cancel_reason = None
    elif kind == CANCEL:
        dropped = await repository.drop_phases_from(session, subscription.id, effective_at)
        await repository.cancel_plan_changes(session, dropped)
        subscription.plan_version_id = subscription.version_at(as_of)
        subscription.pending_plan_version_id = subscription.pending_change_at = None
        subscription.cancel_at, subscription.canceled_at, subscription.cancel_reason = effective_at, as_of, reason
    else:
        status, was = (PAUSED, ACTIVE) if kind == PAUSE else (ACTIVE, PAUSED)
        await repository.set_phase_status_after(session, subscription.id, effective_at, was=was, status=status)
        subscription.paused_at = effective_at if kind == PAUSE else None
    if kind != RESUME:
        new = next(phase for phase in change.phases if phase.starts_at == effective_at)
        new.lifecycle_event_id = event.id
        session.add(new)
    session.add(subscription)
    await session.flush()
    if not dry_run:
        await _tell(session, event, subscription, as_of=as_of)
        await audit.record(
            session,
            actor=request.actor,
            action=f"subscription.{kind.lower()}",
            subject_type="Subscription",
            subject_id=subscription.id,
            customer_id=customer_id,
            as_of=as_of,
            after={"effective_at": effective_at, "timing": event.timing, "reason": reason, "status": event.status},
        )
    return event


# What each request tells the product: a resume revokes a scheduled cancel, an unpause ends a
# pause; both give the subscription back, so both are ``subscription.resumed`` (its data says which).
EVENT_TYPE_OF_KIND = {
    CANCEL: "subscription.cancelled",
    RESUME: "subscription.resumed",
    PAUSE: "subscription.paused",
    UNPAUSE: "subscription.resumed",
}


async def _tell(
    session: AsyncSession, event: SubscriptionEvent, subscription: Subscription, *, as_of: datetime
) -> None:
    """The webhook event of a recorded request, once per request (keyed by its audit row)."""
    event_type = EVENT_TYPE_OF_KIND[event.kind]
    told = await subscription_event(session, event_type, f"{event_type}:{event.id}", subscription, as_of=as_of)
    await emit(session, told, as_of=as_of)


async def record_automatic_cancel(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    at: datetime,
    *,
    reason: str,
    as_of: datetime,
) -> SubscriptionEvent | None:
    """Cancel at ``at`` on Tally's own decision (a trial that ended without a required payment
    method): the phases, row and audit of a requested immediate cancel, so billing and
    entitlements treat it as any cancel. Written with statements of its own, since the billing
    run's subscription is not attached to the session; recorded once (its key names the
    subscription), and not at all when the subscription is already canceled."""
    if cancel_moment(phases) is not None:
        return None
    customer_id = subscription.customer_id
    request = LifecycleRequest(
        customer_id=customer_id,
        kind=CANCEL,
        idempotency_key=f"tally:cancel:{subscription.id}",
        actor="tally",
        timing="IMMEDIATELY",
        at=at,
        reason=reason,
    )
    event = SubscriptionEvent(
        customer_id=customer_id,
        subscription_id=subscription.id,
        kind=CANCEL,
        timing="IMMEDIATELY",
        effective_at=at,
        reason=reason,
        status="applied",
        prorations=[],
        invoice_ids=[],
        actor=request.actor,
        idempotency_key=request.idempotency_key,
        request_hash=_request_hash(request, reason),
        requested_at=as_of,
    )
    session.add(event)
    await session.flush()
    dropped = await repository.drop_phases_from(session, subscription.id, at)
    await repository.cancel_plan_changes(session, dropped)
    await repository.set_canceled(session, subscription.id, cancel_at=at, canceled_at=as_of, reason=reason)
    new = next(phase for phase in phases_after(CANCEL, phases, subscription, at) if phase.starts_at == at)
    new.lifecycle_event_id = event.id
    session.add(new)
    await session.flush()
    canceled = Subscription.model_validate(
        {**subscription.model_dump(), "cancel_at": at, "canceled_at": as_of, "cancel_reason": reason}
    )
    await _tell(session, event, canceled, as_of=as_of)
    return event


async def subscription_events(
    session: AsyncSession, customer_id: uuid.UUID, *, limit: int = 20
) -> list[SubscriptionEvent]:
    return await repository.subscription_events_of(session, customer_id, limit=limit)
