"""Trials: ended early or extended, audited, idempotent.

A trial is the subscription's first period, ``[started_at, trial_ends_at)``, without a base fee;
its end starts the first billing calendar (anchored there, or on the calendar anchor day with a
prorated stub first). Moving the end moves that calendar's start, on the subscription row and on
its first phase, together. What ending a trial bills is billing's business
(:mod:`billing.subscriptions.trials`); this module only changes the subscription and keeps the audit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository
from customers.errors import (
    CancelScheduled,
    ChangeScheduled,
    CustomerNotFound,
    InvalidInput,
    NoTrial,
    SubscriptionCanceled,
    TrialEnded,
)
from customers.models import Subscription, TrialChange
from customers.selection import lock_subscription
from customers.webhook_payloads import subscription_event
from ledger.errors import IdempotencyKeyReused
from notifications.webhook_events import emit
from pricing.catalog import MAX_TRIAL_DAYS

TRIAL_CHANGE_KINDS = ("end", "extend")
#: How long before a trial ends the product is told (``subscription.trial_ending``).
TRIAL_ENDING_NOTICE = timedelta(days=3)


@dataclass(frozen=True)
class TrialChangeRequest:
    customer_id: uuid.UUID
    kind: str  # "end" (at ``at``, default now) or "extend" (until ``at``)
    idempotency_key: str
    actor: str
    at: datetime | None = None
    subscription_id: uuid.UUID | None = None  # required when the customer has several


@dataclass(frozen=True)
class TrialChangeOutcome:
    subscription: Subscription
    change: TrialChange
    repeated: bool  # the same key and request again: nothing was changed this time


def _request_hash(request: TrialChangeRequest) -> str:
    """An end "now" is the same request whenever it is retried; an explicit moment is part of it."""
    moment = request.at.isoformat() if request.at is not None else "now"
    document = {"customer": str(request.customer_id), "kind": request.kind, "at": moment}
    if request.subscription_id is not None:
        document["subscription"] = str(request.subscription_id)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def change_trial(
    session: AsyncSession,
    request: TrialChangeRequest,
    *,
    as_of: datetime,
    backdate_limit: timedelta | None = None,
) -> TrialChangeOutcome:
    """End the customer's trial at ``at`` (now by default; at most ``backdate_limit`` back, the
    API's TALLY_BACKDATE_MAX_DAYS) or extend it until ``at``. Refused, changing nothing, when
    there is no trial, when it has already ended, or when ``at`` does not fall inside what is
    left of it (an end) or after it within MAX_TRIAL_DAYS of the start (an extension), and while a
    cancel or a plan change is scheduled (each was made for the trial's end as it was)."""
    if request.kind not in TRIAL_CHANGE_KINDS:
        raise InvalidInput(f"must be one of {', '.join(TRIAL_CHANGE_KINDS)}", field="kind")
    if not (request.idempotency_key or "").strip():
        raise InvalidInput("is required", field="idempotencyKey")
    at_field = "until" if request.kind == "extend" else "at"
    if request.kind == "extend" and request.at is None:
        raise InvalidInput("is required", field=at_field)
    at = request.at or as_of
    if at.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field=at_field)
    subscription = await lock_subscription(session, request.customer_id, request.subscription_id)
    if subscription is None:
        if await repository.get_by_ids(session, [request.customer_id]):
            raise NoTrial("the customer has no subscription", field="customerId")
        raise CustomerNotFound()
    request_hash = _request_hash(request)
    existing = await repository.trial_change_by_key(session, request.idempotency_key)
    if existing is not None:
        if existing.request_hash != request_hash:
            raise IdempotencyKeyReused()
        return TrialChangeOutcome(subscription, existing, repeated=True)

    trial_end = subscription.trial_ends_at
    if trial_end is None:
        raise NoTrial("the subscription has no trial", field="customerId")
    if trial_end <= as_of:
        raise TrialEnded(f"the trial already ended at {trial_end.isoformat()}", field="customerId")
    if subscription.cancel_at is not None:
        over = subscription.cancel_at <= as_of
        refusal = SubscriptionCanceled if over else CancelScheduled
        raise refusal(
            f"the subscription {'was' if over else 'is'} canceled from {subscription.cancel_at.isoformat()}"
            + ("" if over else "; resume it first to change its trial"),
            field="customerId",
        )
    if subscription.pending_change_at is not None and subscription.pending_change_at > as_of:
        raise ChangeScheduled(
            "a plan change is scheduled; change the plan now or after the trial instead",
            field="customerId",
        )
    if request.kind == "end":
        if backdate_limit is not None and at < as_of - backdate_limit:
            raise InvalidInput(
                f"must be at most {backdate_limit.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="at"
            )
        if not subscription.started_at < at < trial_end:
            raise InvalidInput(
                f"must be inside the trial ({subscription.started_at.isoformat()}, {trial_end.isoformat()}): "
                "after its start and before its end",
                field="at",
            )
    else:
        if at <= trial_end:
            raise InvalidInput(f"must be after the trial's current end, {trial_end.isoformat()}", field="until")
        if at > subscription.started_at + timedelta(days=MAX_TRIAL_DAYS):
            raise InvalidInput(f"a trial lasts at most {MAX_TRIAL_DAYS} days from its start", field="until")

    change = TrialChange(
        customer_id=request.customer_id,
        subscription_id=subscription.id,
        kind=request.kind,
        trial_ends_at=at,
        previous_trial_ends_at=trial_end,
        actor=request.actor,
        idempotency_key=request.idempotency_key,
        request_hash=request_hash,
        requested_at=as_of,
    )
    session.add(change)
    await move_trial_end(session, subscription, at)
    return TrialChangeOutcome(subscription, change, repeated=False)


async def move_trial_end(session: AsyncSession, subscription: Subscription, trial_end: datetime) -> None:
    """Move the trial's end, and with it the start of the first calendar (on the row and on the
    first phase, which keeps it for the billing run); the trial period, once opened, now closes
    at the new end."""
    subscription.trial_ends_at = trial_end
    subscription.billing_anchor = trial_end
    if subscription.invoiced_through is not None:
        subscription.period_closes_at = trial_end
    session.add(subscription)
    await session.flush()
    await repository.set_phase_anchor(session, subscription.id, subscription.started_at, trial_end)


async def announce_trial_endings(session: AsyncSession, *, as_of: datetime) -> int:
    """Tell the product of every trial ending within :data:`TRIAL_ENDING_NOTICE` of ``as_of``
    (``subscription.trial_ending``), once per subscription and trial end: the key names the end, so
    an extended trial is announced again for its new end, and a job run twice tells nothing more.
    How many were told now."""
    told = 0
    for subscription in await repository.trials_ending(session, after=as_of, until=as_of + TRIAL_ENDING_NOTICE):
        assert subscription.trial_ends_at is not None
        key = f"subscription.trial_ending:{subscription.id}:{subscription.trial_ends_at.astimezone(UTC).isoformat()}"
        event = await subscription_event(session, "subscription.trial_ending", key, subscription, as_of=as_of)
        told += await emit(session, event, as_of=as_of) is not None
    return told
