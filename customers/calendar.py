"""A subscription's billing calendar as stored: its schedule of periods from its phases, and the
period in progress from its row alone (the hot paths: entitlements, the API's current period)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from customers.errors import InvalidInput, UnknownInterval
from customers.models import Subscription, SubscriptionPhase
from customers.periods import ANCHOR_DAYS, INTERVALS, BillingCalendar, BillingPeriod, BillingSchedule
from pricing.service import plan_version


def check_anchor_day(anchor_day: int | None, interval: str) -> None:
    """A calendar anchor day: 1 to 31 for month, quarter and year plans (clamped to the month's
    last day: 31 bills on the last day of every month), an ISO weekday 1 to 7 for weekly ones."""
    if anchor_day is None:
        return
    if interval not in INTERVALS:
        raise UnknownInterval(f"must be one of {', '.join(INTERVALS)}", field="interval")
    low, high = ANCHOR_DAYS[interval]
    if not low <= anchor_day <= high:
        what = "an ISO weekday (1 is Monday)" if interval == "week" else "a day of the month"
        raise InvalidInput(f"must be {what} from {low} to {high} for a {interval}ly plan", field="billingAnchorDay")


def _interval_on(phases: list[SubscriptionPhase], intervals: dict[uuid.UUID, str], moment: datetime) -> str:
    current = phases[0].plan_version_id
    for phase in phases:
        if phase.starts_at <= moment:
            current = phase.plan_version_id
    return intervals[current]


async def schedule_of(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase]
) -> BillingSchedule:
    """The subscription's schedule: each calendar starts with the phase that carries its anchor,
    billed every interval of the version in effect at its start (a change of interval always
    starts a calendar, so every version inside one has its interval)."""
    intervals = {
        version_id: (await plan_version(session, version_id)).interval
        for version_id in {phase.plan_version_id for phase in phases}
    }
    starts = [phase.billing_anchor for phase in phases if phase.billing_anchor is not None]
    if not starts:  # the phases of a subscription that is being created
        starts = [subscription.billing_anchor]
    calendars = [
        BillingCalendar(start, _interval_on(phases, intervals, start), subscription.billing_anchor_day)
        for start in starts
    ]
    return BillingSchedule(subscription.started_at, subscription.trial_ends_at, calendars)


def current_period(subscription: Subscription, interval: str, as_of: datetime) -> BillingPeriod:
    """The period containing ``as_of`` from the subscription row alone (``interval`` is that of
    its version at ``as_of``): the trial, else the calendar in effect, cut short by a change of
    interval scheduled inside it."""
    schedule = BillingSchedule(
        subscription.started_at,
        subscription.trial_ends_at,
        [BillingCalendar(subscription.billing_anchor_at(as_of), interval, subscription.billing_anchor_day)],
    )
    period = schedule.period_containing(as_of)
    pending = subscription.pending_billing_anchor
    if pending is not None and period.start < pending < period.end:
        return BillingPeriod(period.start, pending, period.full_start, period.full_end, period.natural_end)
    return period
