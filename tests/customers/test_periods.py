"""Billing periods: anchored, half-open, clamped at month ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from customers.periods import (
    ANCHOR_DAYS,
    INTERVALS,
    BillingCalendar,
    BillingPeriod,
    BillingSchedule,
    calendar_month,
    period_containing,
    periods_ending_within,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_month_end_anchor_clamps_and_comes_back() -> None:
    anchor = at("2026-01-31T10:00:00")
    assert period_containing(anchor, "month", at("2026-02-15T00:00:00")) == (
        at("2026-01-31T10:00:00"),
        at("2026-02-28T10:00:00"),
    )
    assert period_containing(anchor, "month", at("2026-03-01T00:00:00")) == (
        at("2026-02-28T10:00:00"),
        at("2026-03-31T10:00:00"),
    )
    leap = period_containing(at("2028-01-31T00:00:00"), "month", at("2028-02-10T00:00:00"))
    assert leap[1] == at("2028-02-29T00:00:00")


def test_periods_are_half_open() -> None:
    anchor = at("2026-03-15T12:00:00")
    start, end = period_containing(anchor, "month", at("2026-04-15T12:00:00"))
    assert (start, end) == (at("2026-04-15T12:00:00"), at("2026-05-15T12:00:00"))
    assert period_containing(anchor, "month", end - timedelta(microseconds=1))[0] == start


def test_yearly_and_calendar_month() -> None:
    assert period_containing(at("2024-02-29T00:00:00"), "year", at("2025-06-01T00:00:00")) == (
        at("2025-02-28T00:00:00"),
        at("2026-02-28T00:00:00"),
    )
    assert calendar_month(at("2026-11-25T17:00:00")) == (at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00"))


@given(
    anchor=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    offset_hours=st.integers(min_value=0, max_value=24 * 365 * 3),
    interval=st.sampled_from(INTERVALS),
)
def test_the_period_contains_as_of_and_periods_tile(anchor: datetime, offset_hours: int, interval: str) -> None:
    as_of = anchor + timedelta(hours=offset_hours)
    start, end = period_containing(anchor, interval, as_of)
    assert start <= as_of < end
    assert period_containing(anchor, interval, end)[0] == end, "the next period starts where this one ends"
    assert (end - start) >= timedelta(days={"week": 7, "month": 28, "quarter": 89, "year": 365}[interval])


def test_a_yearly_plan_anchored_on_feb_29_comes_back_to_it_in_leap_years() -> None:
    anchor = at("2024-02-29T00:00:00")
    assert period_containing(anchor, "year", at("2028-03-01T00:00:00")) == (
        at("2028-02-29T00:00:00"),
        at("2029-02-28T00:00:00"),
    )


def test_the_whole_periods_ending_in_a_window() -> None:
    anchor = at("2026-01-31T00:00:00")
    assert periods_ending_within(anchor, "month", at("2026-02-01T00:00:00"), at("2026-04-30T00:00:00")) == [
        (at("2026-01-31T00:00:00"), at("2026-02-28T00:00:00")),
        (at("2026-02-28T00:00:00"), at("2026-03-31T00:00:00")),
        (at("2026-03-31T00:00:00"), at("2026-04-30T00:00:00")),
    ]
    assert periods_ending_within(anchor, "month", at("2026-02-28T00:00:00"), at("2026-03-30T00:00:00")) == []


def test_quarters_keep_the_anchor_day_clamped_to_month_ends() -> None:
    anchor = at("2026-01-31T00:00:00")
    assert period_containing(anchor, "quarter", at("2026-05-01T00:00:00")) == (
        at("2026-04-30T00:00:00"),
        at("2026-07-31T00:00:00"),
    )
    assert period_containing(anchor, "quarter", at("2026-12-01T00:00:00")) == (
        at("2026-10-31T00:00:00"),
        at("2027-01-31T00:00:00"),
    )


def test_weeks_are_seven_days_from_the_anchor() -> None:
    anchor = at("2026-03-04T09:30:00")  # a Wednesday
    assert period_containing(anchor, "week", at("2026-03-20T00:00:00")) == (
        at("2026-03-18T09:30:00"),
        at("2026-03-25T09:30:00"),
    )


def test_calendar_periods_start_on_the_anchor_day_and_the_first_is_a_stub() -> None:
    monthly = BillingCalendar(at("2026-03-08T00:00:00"), "month", 1)
    assert monthly.period_containing(at("2026-03-20T00:00:00")) == BillingPeriod(
        at("2026-03-08T00:00:00"),
        at("2026-04-01T00:00:00"),
        at("2026-03-01T00:00:00"),
        at("2026-04-01T00:00:00"),
        at("2026-04-01T00:00:00"),
    )
    assert monthly.period_containing(at("2026-04-01T00:00:00")).start == at("2026-04-01T00:00:00")
    # Calendar quarters start in January, April, July and October; years on January 1.
    quarterly = BillingCalendar(at("2026-05-10T12:00:00"), "quarter", 1)
    assert quarterly.period_containing(at("2026-05-10T12:00:00")).full_start == at("2026-04-01T00:00:00")
    assert quarterly.period_containing(at("2026-05-10T12:00:00")).end == at("2026-07-01T00:00:00")
    yearly = BillingCalendar(at("2026-05-10T12:00:00"), "year", 1)
    assert yearly.period_containing(at("2026-06-01T00:00:00")).end == at("2027-01-01T00:00:00")
    # Weekly calendars start on an ISO weekday: 1 is Monday (2026-03-09 is one).
    weekly = BillingCalendar(at("2026-03-11T15:00:00"), "week", 1)
    assert weekly.period_containing(at("2026-03-12T00:00:00")).end == at("2026-03-16T00:00:00")
    # Day 31 is each month's last day.
    last_day = BillingCalendar(at("2026-02-10T00:00:00"), "month", 31)
    assert last_day.period_containing(at("2026-03-15T00:00:00")).start == at("2026-02-28T00:00:00")
    assert last_day.period_containing(at("2026-03-15T00:00:00")).end == at("2026-03-31T00:00:00")


def test_a_trial_is_one_period_and_a_change_of_interval_cuts_the_period_short() -> None:
    schedule = BillingSchedule(
        at("2026-03-01T00:00:00"),
        at("2026-03-15T00:00:00"),
        [
            BillingCalendar(at("2026-03-15T00:00:00"), "month"),
            BillingCalendar(at("2026-05-01T00:00:00"), "year"),
        ],
    )
    trial = schedule.period_containing(at("2026-03-02T00:00:00"))
    assert (trial.start, trial.end, trial.trial) == (at("2026-03-01T00:00:00"), at("2026-03-15T00:00:00"), True)
    cut = schedule.period_containing(at("2026-04-20T00:00:00"))
    assert (cut.start, cut.end, cut.natural_end) == (
        at("2026-04-15T00:00:00"),
        at("2026-05-01T00:00:00"),
        at("2026-05-15T00:00:00"),
    )
    assert cut.cut_short
    assert schedule.period_containing(at("2026-05-01T00:00:00")).end == at("2027-05-01T00:00:00")


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@st.composite
def schedules(draw: st.DrawFn) -> BillingSchedule:
    """A subscription's life: maybe a trial, then one to three calendars of any interval, each
    anniversary or calendar-anchored on any valid day."""
    started_at = draw(moments)
    trial_ends_at = started_at + timedelta(days=draw(st.integers(1, 60))) if draw(st.booleans()) else None
    start = trial_ends_at or started_at
    calendars = []
    for _ in range(draw(st.integers(1, 3))):
        interval = draw(st.sampled_from(INTERVALS))
        low, high = ANCHOR_DAYS[interval]
        day = draw(st.one_of(st.none(), st.integers(low, high)))
        calendars.append(BillingCalendar(start, interval, day))
        start = start + timedelta(hours=draw(st.integers(1, 24 * 500)))
    return BillingSchedule(started_at, trial_ends_at, calendars)


@given(schedule=schedules(), offset_hours=st.integers(min_value=0, max_value=24 * 365 * 3))
def test_every_schedule_tiles_time_with_no_gap_or_overlap(schedule: BillingSchedule, offset_hours: int) -> None:
    """From the start on, each period begins where the previous one ended, contains every moment
    the schedule says it contains, is never longer than its full calendar period, and never
    crosses the start of a calendar or the end of a trial."""
    end = schedule.started_at + timedelta(hours=offset_hours)
    period = schedule.period_containing(schedule.started_at)
    assert period.start == schedule.started_at
    boundaries = {c.starts_at for c in schedule.calendars} | {schedule.trial_ends_at} - {None}
    while period.start <= end:
        assert period.start < period.end <= period.natural_end
        assert period.full_start <= period.start and period.natural_end <= period.full_end
        for moment in (
            period.start,
            period.end - timedelta(microseconds=1),
            period.start + (period.end - period.start) / 2,
        ):
            assert schedule.period_containing(moment) == period
        assert not any(period.start < boundary < period.end for boundary in boundaries)
        following = schedule.period_containing(period.end)
        assert following.start == period.end, "no gap, no overlap"
        period = following
