"""The pure core of usage charged in advance (seats): what the bill at a period's start, the
top-ups and the credits add up to, against an independent model that integrates the billed level
over time (properties), plus the cases worked out by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from decimal import localcontext

from hypothesis import given
from hypothesis import strategies as st

from pricing.advance import (
    AdvanceCharge,
    AdvancePhase,
    Reading,
    advance_amount,
    period_adjustments,
)
from pricing.proration import share_of_period
from pricing.rating import RATING_PRECISION, ChargeTerms, Tier, rate

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
PER_SEAT = ChargeTerms("per_unit", unit_price=D("10.00"), included=D(2))
TIERED = ChargeTerms(
    "graduated", tiers=(Tier(D(5), D("12"), D("3")), Tier(D(20), D("9")), Tier(None, D("7"))), minimum=D("4")
)

moments = st.integers(min_value=0, max_value=30 * 86_400 - 1).map(lambda s: START + timedelta(seconds=s))
values = st.integers(min_value=0, max_value=40).map(D)


def _charge(terms: ChargeTerms) -> AdvanceCharge:
    return AdvanceCharge(uuid.uuid4(), uuid.uuid4(), "seats", terms)


def _model(terms: ChargeTerms, start_value: D, readings: list[tuple[datetime, D]], until: datetime) -> D:
    """Independent: the billed level (the highest value so far) integrated over ``[START, until)``."""
    with localcontext(prec=RATING_PRECISION):
        level, total, since = start_value, D(0), START
        for moment, value in sorted(readings, key=lambda r: r[0]):
            if moment >= until:
                break
            if value > level:
                total += rate(terms, level) * share_of_period(since, moment, START, END)
                level, since = value, moment
        return total + rate(terms, level) * share_of_period(since, until, START, END)


def _total(amounts: list[D]) -> D:
    with localcontext(prec=RATING_PRECISION):
        return sum(amounts, D(0))


@given(st.sampled_from([PER_SEAT, TIERED]), values, st.lists(st.tuples(moments, values), max_size=12))
def test_advance_and_top_ups_bill_the_highest_level_for_the_time_it_held(
    terms: ChargeTerms, start_value: D, readings: list[tuple[datetime, D]]
) -> None:
    charge = _charge(terms)
    first = advance_amount(charge, start_value, at=START, scale=D(1))
    rest = period_adjustments(
        billed=[(charge, start_value)],
        phases=[AdvancePhase(START, (charge,))],
        levels_at_start={"seats": start_value},
        readings=[Reading(moment, "seats", value) for moment, value in readings],
        period_start=START,
        period_end=END,
    )
    assert all(amount.kind == "top_up" and amount.amount >= 0 for amount in rest), "a fall is never credited"
    assert abs(_total([first.amount, *(a.amount for a in rest)]) - _model(terms, start_value, readings, END)) < D(
        "1e-60"
    )


@given(
    st.sampled_from([PER_SEAT, TIERED]),
    values,
    st.lists(st.tuples(moments, values), max_size=12),
    moments.filter(lambda moment: moment > START),
)
def test_a_cancel_leaves_billed_only_the_time_before_it(
    terms: ChargeTerms, start_value: D, readings: list[tuple[datetime, D]], canceled: datetime
) -> None:
    charge = _charge(terms)
    first = advance_amount(charge, start_value, at=START, scale=D(1))
    rest = period_adjustments(
        billed=[(charge, start_value)],
        phases=[AdvancePhase(START, (charge,)), AdvancePhase(canceled, ())],
        levels_at_start={"seats": start_value},
        readings=[Reading(moment, "seats", value) for moment, value in readings],
        period_start=START,
        period_end=END,
    )
    total = _total([first.amount, *(a.amount for a in rest)])
    assert abs(total - _model(terms, start_value, readings, canceled)) < D("1e-60")
    assert not [a for a in rest if a.at > canceled], "nothing after the cancel"


def test_a_pause_credits_the_rest_and_the_unpause_charges_the_value_then() -> None:
    """5 seats billed; paused on the 11th (credit 5 × 10 × 20/30, of the 3 above the 2 included);
    7 seats while paused; unpaused on the 21st: 7 seats (5 billable) for 10 of 30 days."""
    charge = _charge(PER_SEAT)
    found = period_adjustments(
        billed=[(charge, D(5))],
        phases=[
            AdvancePhase(START, (charge,)),
            AdvancePhase(START + timedelta(days=10), ()),
            AdvancePhase(START + timedelta(days=20), (charge,)),
        ],
        levels_at_start={"seats": D(5)},
        readings=[Reading(START + timedelta(days=15), "seats", D(7))],
        period_start=START,
        period_end=END,
    )
    with localcontext(prec=RATING_PRECISION):
        assert [(a.kind, a.previous, a.quantity, a.share, a.amount) for a in found] == [
            ("credit", D(5), D(0), D(20) / 30, -30 * (D(20) / 30)),
            ("charge", D(0), D(7), D(10) / 30, 50 * (D(10) / 30)),
        ]


def test_a_stub_scales_the_bill_and_the_top_ups_and_readings_at_one_moment_count_once() -> None:
    """A stub that is half its full period: 3 seats billed for half (15.00 less the allowance);
    at one moment the seats read 9 then 6: the highest tops up, the last is the value after it."""
    charge = _charge(PER_SEAT)
    assert advance_amount(charge, D(3), at=START, scale=D("0.5")).amount == D(5)
    found = period_adjustments(
        billed=[(charge, D(3))],
        phases=[AdvancePhase(START, (charge,))],
        levels_at_start={"seats": D(3)},
        readings=[
            Reading(START + timedelta(days=15), "seats", D(9)),
            Reading(START + timedelta(days=15), "seats", D(6)),
        ],
        period_start=START,
        period_end=END,
        scale=D("0.5"),
    )
    assert [(a.kind, a.previous, a.quantity, a.amount) for a in found] == [("top_up", D(3), D(9), D(15))]
