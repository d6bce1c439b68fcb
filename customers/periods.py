"""Billing periods: half-open ``[start, end)``, in UTC. Pure: no clock, no I/O.

A period boundary is ``anchor + k × interval``. Month, quarter and year steps keep the anchor's
day of month, clamped to the month's last day (an anchor on Jan 31 gives Feb 28 or 29, then Mar
31), and its time of day; week steps are seven days.

A subscription's periods follow a :class:`BillingCalendar`: from its ``starts_at`` on, anchored
on ``starts_at`` itself (anniversary billing) or on a day of the calendar (a billing anchor day:
the 1st of the month, Monday for weekly plans); the first period then runs from ``starts_at`` to
the first boundary after it, a *stub* that is a share of the *full* period it belongs to. A trial
is one period of its own, before the first calendar; a change of billing interval starts a new
calendar at the change and cuts the period in progress short there.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

INTERVALS = ("week", "month", "quarter", "year")
MONTHS_IN = {"month": 1, "quarter": 3, "year": 12}
WEEK = timedelta(days=7)
# Calendar anchor days: a day of the month for month, quarter and year plans (clamped to the
# month's last day, so 31 means "the month's last day" in short months), an ISO weekday for weeks.
ANCHOR_DAYS = {"week": (1, 7), "month": (1, 31), "quarter": (1, 31), "year": (1, 31)}
# A Monday long before any subscription: calendar anchors are counted from it.
_CALENDAR_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_containing(anchor: datetime, interval: str, as_of: datetime) -> tuple[datetime, datetime]:
    """The period of a subscription anchored at ``anchor`` that contains ``as_of``.

    Before the anchor, the first period is returned.
    """
    anchor = anchor.astimezone(UTC)
    if interval == "week":
        weeks = max(0, (as_of - anchor) // WEEK)
        return anchor + WEEK * weeks, anchor + WEEK * (weeks + 1)
    step = MONTHS_IN[interval]
    months = max(0, ((as_of.year - anchor.year) * 12 + as_of.month - anchor.month) // step * step)
    start = add_months(anchor, months)
    while start > as_of and months > 0:
        months -= step
        start = add_months(anchor, months)
    end = add_months(anchor, months + step)
    while end <= as_of:
        months += step
        start, end = end, add_months(anchor, months + step)
    return start, end


def calendar_anchor(interval: str, anchor_day: int) -> datetime:
    """The boundary calendar periods are counted from: day ``anchor_day`` of January 2000 at
    midnight UTC for month, quarter (so quarters start in January, April, July, October) and year
    plans; ISO weekday ``anchor_day`` (1 is Monday) of the first week of 2000 for weekly ones."""
    low, high = ANCHOR_DAYS[interval]
    if not low <= anchor_day <= high:
        raise ValueError(f"a {interval} anchor day is {low} to {high}")
    if interval == "week":
        return _CALENDAR_ORIGIN + timedelta(days=anchor_day - 1)
    return datetime(2000, 1, anchor_day, tzinfo=UTC)


@dataclass(frozen=True)
class BillingPeriod:
    """``[start, end)``, a part of the full calendar period ``[full_start, full_end)`` (equal to it
    unless the period is a stub). ``natural_end`` is where the period would have ended had a new
    calendar not cut it short (equal to ``end`` otherwise). A trial period is its own full period."""

    start: datetime
    end: datetime
    full_start: datetime
    full_end: datetime
    natural_end: datetime
    trial: bool = False

    @property
    def cut_short(self) -> bool:
        return self.end < self.natural_end


@dataclass(frozen=True)
class BillingCalendar:
    """From ``starts_at`` on, periods of ``interval``, anchored on ``starts_at`` (``anchor_day``
    None: anniversary billing) or on a calendar day (then the first period is a stub)."""

    starts_at: datetime
    interval: str
    anchor_day: int | None = None

    @property
    def anchor(self) -> datetime:
        if self.anchor_day is None:
            return self.starts_at
        return calendar_anchor(self.interval, self.anchor_day)

    def period_containing(self, as_of: datetime) -> BillingPeriod:
        """The period containing ``as_of`` (the first one before ``starts_at``)."""
        full_start, full_end = period_containing(self.anchor, self.interval, max(as_of, self.starts_at))
        return BillingPeriod(max(full_start, self.starts_at), full_end, full_start, full_end, full_end)


@dataclass(frozen=True)
class BillingSchedule:
    """A subscription's periods over its life: the trial ``[started_at, trial_ends_at)`` if any,
    then each calendar from its start until the next one starts (sorted, the first starting at
    the trial's end or at ``started_at``)."""

    started_at: datetime
    trial_ends_at: datetime | None
    calendars: Sequence[BillingCalendar]

    def period_containing(self, as_of: datetime) -> BillingPeriod:
        """The period containing ``as_of`` (the first one before the subscription started)."""
        if self.trial_ends_at is not None and self.started_at < self.trial_ends_at and as_of < self.trial_ends_at:
            return BillingPeriod(
                self.started_at, self.trial_ends_at, self.started_at, self.trial_ends_at, self.trial_ends_at, True
            )
        index = 0
        for position, candidate in enumerate(self.calendars):
            if candidate.starts_at <= as_of:
                index = position
        period = self.calendars[index].period_containing(as_of)
        if index + 1 < len(self.calendars) and self.calendars[index + 1].starts_at < period.end:
            return BillingPeriod(
                period.start,
                self.calendars[index + 1].starts_at,
                period.full_start,
                period.full_end,
                period.natural_end,
            )
        return period

    def periods_ending_within(self, start: datetime, end: datetime) -> list[BillingPeriod]:
        """The periods that end in ``(start, end]``, oldest first."""
        periods = []
        period = self.period_containing(start)
        while period.end <= end:
            if period.end > start:
                periods.append(period)
            period = self.period_containing(period.end)
        return periods


def calendar_month(as_of: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing ``as_of``: the period of a customer with no plan."""
    start = as_of.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, add_months(start, 1)


def periods_ending_within(
    anchor: datetime, interval: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The whole billing periods that end in ``(start, end]``, oldest first."""
    periods = []
    period_start, period_end = period_containing(anchor, interval, start)
    while period_end <= end:
        if period_end > start:
            periods.append((period_start, period_end))
        period_start, period_end = period_containing(anchor, interval, period_end)
    return periods
