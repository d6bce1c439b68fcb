"""Billing periods: anchored on the subscription's start, half-open ``[start, end)``, in UTC.

Monthly periods keep the anchor's day of month, clamped to the month's last day (an anchor on
Jan 31 gives Feb 28 or 29, then Mar 31), and its time of day. Pure: no clock, no I/O.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_containing(anchor: datetime, interval: str, as_of: datetime) -> tuple[datetime, datetime]:
    """The period of a subscription started at ``anchor`` that contains ``as_of``.

    Before the anchor, the first period is returned.
    """
    anchor = anchor.astimezone(UTC)
    step = 12 if interval == "year" else 1
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
