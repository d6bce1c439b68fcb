"""Billing periods: anchored, half-open, clamped at month ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from customers.periods import calendar_month, period_containing, periods_ending_within


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
    interval=st.sampled_from(["month", "year"]),
)
def test_the_period_contains_as_of_and_periods_tile(anchor: datetime, offset_hours: int, interval: str) -> None:
    as_of = anchor + timedelta(hours=offset_hours)
    start, end = period_containing(anchor, interval, as_of)
    assert start <= as_of < end
    assert period_containing(anchor, interval, end)[0] == end, "the next period starts where this one ends"
    assert (end - start) >= timedelta(days=28 if interval == "month" else 365)


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
