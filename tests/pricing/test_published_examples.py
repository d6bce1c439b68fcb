"""Published worked examples of the pricing models and proration conventions, each with its source.

Every number below is one a billing vendor published (its docs or its own test suite); the
comment beside it says where and what the source says. Where a source gives only part of an
example, the comment says which part is ours.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.money import round_to_minor
from pricing.advance import AdvanceCharge, AdvancePhase, Reading, advance_amount, period_adjustments
from pricing.proration import FeePhase, period_fee_prorations, share_of_period
from pricing.rating import ChargeTerms, Tier, rate, rate_events


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- Flat fee per tier -------------------------------------------------------------------------

# docs.stripe.com/subscriptions/pricing-models/tiered-pricing ("Set up tiered pricing"), volume-based
# pricing, Typographic's tiers: 1-5 fonts at 7 USD, 6-10 at 6.5 USD, 11+ at 6 USD; "a customer
# with 5 fonts is charged 35 USD (5 × 7 USD) ... 6 fonts ... 39 USD (6 × 6.5 USD)", and the table
# 1 → 7, 5 → 35, 6 → 39, 20 → 120, 25 → 150.
TYPOGRAPHIC = (Tier(D(5), D(7)), Tier(D(10), D("6.5")), Tier(None, D(6)))


@pytest.mark.parametrize(("fonts", "total"), [(1, 7), (5, 35), (6, 39), (20, 120), (25, 150)])
def test_stripe_typographic_volume(fonts: int, total: int) -> None:
    assert rate(ChargeTerms("volume", tiers=TYPOGRAPHIC), D(fonts)) == total


def test_stripe_typographic_graduated_matches_volume_inside_the_first_tier() -> None:
    # Same page, graduated pricing: "5 fonts result in the same charge as volume-based pricing:
    # 35 USD total at 7 USD per font".
    assert rate(ChargeTerms("graduated", tiers=TYPOGRAPHIC), D(5)) == 35


def test_stripe_volume_with_a_flat_fee_is_66_not_36() -> None:
    # Issue 15 cites Stripe's documented volume example with a flat fee (flat_amount, "the flat
    # billing amount for an entire tier, regardless of the number of units in the tier": Stripe
    # API reference, price tiers) as 66, where a rating that ignores the flat fee gives 36. The
    # stored copy of Stripe's page ends before that section, so the tiers here are ours: the
    # simplest reading consistent with both figures, 6 units in a tier at 6 per unit with a flat
    # fee of 30 (6 × 6 = 36; 36 + 30 = 66).
    tiers = (Tier(D(5), D(7)), Tier(D(10), D(6), D(30)), Tier(None, D(5), D(60)))
    assert rate(ChargeTerms("volume", tiers=tiers), D(6)) == 66
    without_flat_fees = tuple(Tier(t.up_to, t.unit_price) for t in tiers)
    assert rate(ChargeTerms("volume", tiers=without_flat_fees), D(6)) == 36


def test_lago_volume_with_a_flat_fee() -> None:
    # getlago.com/docs/guide/plans/charges/charge-models/volume: tiers 0-10,000 at $0.0010,
    # 10,001-50,000 at $0.0008, 50,001-100,000 at $0.0006, 100,001-∞ at $0.0004, each with a $10
    # fixed fee; "65,000 API calls would cost 65,000 x $0.0006 + $10 = $49".
    tiers = (
        Tier(D(10_000), D("0.0010"), D(10)),
        Tier(D(50_000), D("0.0008"), D(10)),
        Tier(D(100_000), D("0.0006"), D(10)),
        Tier(None, D("0.0004"), D(10)),
    )
    assert rate(ChargeTerms("volume", tiers=tiers), D(65_000)) == 49


def test_lago_graduated_flat_fee_per_tier_reached() -> None:
    # getlago.com/docs/v2/guide/rate-cards/pricing-models/graduated: "A tier can also carry a
    # flat_amount: a flat fee for the whole tier, on top of its unit prices"; the page's prices
    # (its table did not survive in the stored copy) are replaced by getlago.com/docs/guide/plans/
    # charges/charge-models/graduated's: "$1 per unit for the first 100 units ..., then $0.50 per
    # unit for the next 100 calls and finally, $0.10 for any additional unit". The flat fees
    # (5, 10, 20) are ours: 250 units = 100 × 1 + 5 + 100 × 0.5 + 10 + 50 × 0.1 + 20 = 190.
    tiers = (Tier(D(100), D(1), D(5)), Tier(D(200), D("0.5"), D(10)), Tier(None, D("0.1"), D(20)))
    assert rate(ChargeTerms("graduated", tiers=tiers), D(250)) == 190
    assert rate(ChargeTerms("graduated", tiers=tiers), D(100)) == 105  # the second tier is not reached
    assert rate(ChargeTerms("graduated", tiers=tuple(Tier(t.up_to, t.unit_price) for t in tiers)), D(250)) == 155


# --- Percentage (Lago) ---------------------------------------------------------------------------

# github.com/getlago/lago-api, spec/services/charge_models/percentage_service_spec.rb: rate 1.3%,
# fixed_amount 2.0 per event, 4 events of 50, 100, 250 and 400 (running totals 50, 150, 400, 800).
LAGO_EVENTS = [D(50), D(100), D(250), D(400)]


@pytest.mark.parametrize(
    ("free_events", "free_value", "amount"),
    [
        # "when fixed amount value is 0" (sic): 3 free events and 250.0 free: (800 - 250) × 1.3%
        # + (4 - 2) × 2.0 = 7.15 + 4.0 = 11.15
        (3, D(250), D("11.15")),
        # "when free_units_per_total_aggregation is nil": (800 - 400) × 1.3% + (4 - 3) × 2.0 = 7.2
        (3, None, D("7.2")),
        # "when free_units_per_events is nil": 11.15 again (250 free reaches only 2 events)
        (None, D(250), D("11.15")),
        # "when free units are not set": 800 × 1.3% + 4 × 2.0 = 18.4
        (None, None, D("18.4")),
        # "when free_units_per_total_aggregation > last running total": 500 free, 3 events: 7.2
        (3, D(500), D("7.2")),
    ],
)
def test_lago_percentage_free_events_and_free_value(free_events: int | None, free_value: D | None, amount: D) -> None:
    terms = ChargeTerms(
        "percentage", percentage_rate=D("1.3"), fixed_fee=D(2), free_events=free_events, included=free_value or D(0)
    )
    assert rate_events(terms, LAGO_EVENTS) == amount


# Same spec, "when applying min / max amount per transaction" (premium): rate 2.99%, events of
# 10, 80 and 10,000, per_transaction_min_amount 1.75, per_transaction_max_amount 12.
LAGO_MIN_MAX = [D(10), D(80), D(10_000)]


@pytest.mark.parametrize(
    ("fixed_fee", "free_events", "free_value", "amount"),
    [
        # "1.75 (min as 10 * 0.0299 < 1.75) + 2.392 + 12 (max as 10000 * 0.0299 > 12)" = 16.142
        (D(0), None, D(0), D("16.142")),
        # "with fixed_amount" 2.0: "2.299 (10 * 0.0299 + 2 > 1.75) + 4.392 + 12" = 18.691
        (D(2), None, D(0), D("18.691")),
        # "with free units per events" 2: "applies the min and max only on paying transaction": 12
        (D(0), 2, D(0), D(12)),
        # "with free units per total aggregation" 30: 1.794 ((10 + 80 - 30) × 0.0299) + 12 = 13.794
        (D(0), None, D(30), D("13.794")),
        # "when both ... are applied", 3 events and 10,000 free: (10 + 80 + 10000 - 10000) × 0.0299
        (D(0), 3, D(10_000), D("2.691")),
    ],
)
def test_lago_percentage_per_event_minimum_and_maximum(
    fixed_fee: D, free_events: int | None, free_value: D, amount: D
) -> None:
    terms = ChargeTerms(
        "percentage",
        percentage_rate=D("2.99"),
        fixed_fee=fixed_fee,
        free_events=free_events,
        included=free_value,
        per_event_minimum=D("1.75"),
        per_event_maximum=D(12),
    )
    assert rate_events(terms, LAGO_MIN_MAX) == amount


def test_lago_percentage_without_per_event_terms() -> None:
    # getlago.com/docs/v2/guide/rate-cards/pricing-models/percentage: "the customer processes
    # 1,000 USD of transactions. The calculation uses 2% ... The calculated fee is 20 USD".
    terms = ChargeTerms("percentage", percentage_rate=D(2))
    assert rate(terms, D(1000)) == 20
    # lago-api's spec, "with small units amount": rate 2.9%, 4 units: 0.116
    assert rate(ChargeTerms("percentage", percentage_rate=D("2.9")), D(4)) == D("0.116")


# --- Package rounding ----------------------------------------------------------------------------


def test_lago_package_rounds_up() -> None:
    # getlago.com/docs/v2/guide/rate-cards/pricing-models/package: "2,000 calls ... Each package
    # contains 100 calls and costs 1 USD ... 20 packages, giving a calculated fee of 20 USD";
    # "with 50 free calls ... 200 calls leave 150 billable calls. Lago rounds these up to two
    # packages, for a fee of 2 USD".
    package = ChargeTerms("package", package_size=D(100), package_price=D(1))
    assert rate(package, D(2000)) == 20
    assert rate(ChargeTerms("package", package_size=D(100), package_price=D(1), included=D(50)), D(200)) == 2


def test_package_rounding_down_leaves_a_partial_package_free() -> None:
    # Stripe's transform_quantity (API reference, Price.transform_quantity): "divide_by: Divide
    # usage by this number. round: After division, either round the result up or down"; its v2
    # license fee object example is divide_by 1000, round "down", 20.00 a unit. The quantities
    # are ours: 1,999 calls are one whole thousand (20.00), 2,000 are two (40.00); rounding up,
    # 1,999 would be two. And Lago's 150 billable calls above, rounded down, are one package.
    down = ChargeTerms("package", package_size=D(1000), package_price=D("20.00"), rounding="down")
    assert rate(down, D(1999)) == 20
    assert rate(down, D(2000)) == 40
    assert rate(ChargeTerms("package", package_size=D(1000), package_price=D("20.00")), D(1999)) == 40
    lago_down = ChargeTerms("package", package_size=D(100), package_price=D(1), included=D(50), rounding="down")
    assert rate(lago_down, D(200)) == 1


# --- Stair step -----------------------------------------------------------------------------------


def test_stair_step_charges_the_price_of_the_step_reached() -> None:
    # Maxio (Chargify) Advanced Billing prices components by "stairstep" among its pricing schemes
    # (its SDK's PricingScheme: stairstep, volume, per_unit, tiered): one price for the range the
    # quantity falls in. No worked figure was retrieved; the steps are ours: 1-10 users 100.00,
    # 11-50 users 300.00, above 50 users 500.00.
    steps = ChargeTerms(
        "stair_step", tiers=(Tier(D(10), D(0), D(100)), Tier(D(50), D(0), D(300)), Tier(None, D(0), D(500)))
    )
    assert [rate(steps, D(q)) for q in (0, 1, 10, 11, 50, 51, 10_000)] == [0, 100, 100, 300, 300, 500, 500]


# --- Proration: exact (Stripe) -----------------------------------------------------------------


def _change(old_fee: D, new_fee: D, at_: datetime, start: datetime, end: datetime, proration: str) -> list[D]:
    old = FeePhase(start, uuid.uuid4(), "Old", old_fee, proration=proration)
    new = FeePhase(at_, uuid.uuid4(), "New", new_fee, proration=proration)
    found = period_fee_prorations(billed=old, phases=[old, new], period_start=start, period_end=end)
    # As an invoice line shows it: rounded once to cents (a share such as 10/30 is not exact).
    return [D(round_to_minor(line.amount, "USD")) / 100 for line in found]


def test_stripe_upgrade_halfway_credits_5_and_charges_10() -> None:
    # docs.stripe.com/billing/subscriptions/prorations: "If a customer upgrades from a 10 USD
    # monthly plan to a 20 USD option halfway through the billing period, the customer is billed
    # an additional 5 USD: -5 USD for unused time on the original 10 USD plan, +10 USD for the
    # remaining time on the new 20 USD plan". Halfway through April (30 days): 16 April, 00:00.
    credit, charge = _change(D(10), D(20), at("2026-04-16"), at("2026-04-01"), at("2026-05-01"), "exact")
    assert (credit, charge) == (-5, 10)


def test_stripe_prorates_to_the_second_where_day_based_does_not() -> None:
    # docs.stripe.com/billing/scripts/prorations: "Stripe calculates proration down to the second
    # based on the starting timestamp of the billing period and the timestamp of the proration's
    # triggering event". A change at noon on the 16th of April: 14.5 of 30 days remain exactly;
    # day-based, the 16th counts as used and 14 remain.
    start, end, noon = at("2026-04-01"), at("2026-05-01"), at("2026-04-16T12:00:00")
    assert share_of_period(noon, end, start, end, "exact") == D("14.5") / 30
    assert share_of_period(noon, end, start, end, "day") == D(14) / 30


# --- Proration: day-based (Chargebee, Lago, Kill Bill) ------------------------------------------


def test_chargebee_upgrade_on_the_15th() -> None:
    # support.chargebee.com/support/solutions/articles/15293-pro-ration-logic-in-subscriptions:
    # "a subscription is created on a monthly Plan A for $30 on 1st Nov. The Subscription is
    # changed (Upgraded) to Plan B for $100 on 15th Nov. Credits issues from Plan A for the unused
    # term = ($30/30)*15 = $15; Charges for the new Plan B for the remaining term = ($100/30)*15 =
    # $50; ... Amount to be charged = $50-$15(Credits) = $35". Day-based with the change during
    # the 15th: 15 days used (1-15 November), 15 remain.
    credit, charge = _change(D(30), D(100), at("2025-11-15T10:30:00"), at("2025-11-01"), at("2025-12-01"), "day")
    assert (credit, charge, credit + charge) == (-15, 50, 35)
    # The same change prorated exactly would leave 15.5625 days, not 15: the conventions differ.
    exact_credit, _ = _change(D(30), D(100), at("2025-11-15T10:30:00"), at("2025-11-01"), at("2025-12-01"), "exact")
    assert exact_credit != -15


def test_chargebee_quantity_downgrade_counts_the_change_day_as_used() -> None:
    # chargebee.com/docs/proration-old.html, Example 2 (reducing plan quantity): 3 × $30 = $90,
    # billing period 1 April 2013 to 1 May 2013, "Downgraded On: 10 Apr 2013 / Current Quantity
    # Used for: 10 days / New Plan Quantity: 2 / Amount for Period Used: $30 / Prorated Amount:
    # $60 ($90-$30) / Amount to be charged for the remaining 20 days for 2 units is $40".
    credit, charge = _change(D(90), D(60), at("2013-04-10T09:00:00"), at("2013-04-01"), at("2013-05-01"), "day")
    assert (credit, charge) == (-60, 40)


def test_chargebee_downgrade_at_the_start_of_a_day() -> None:
    # chargebee.com/docs/proration-old.html, Example 1: "$60/Month, Current Billing Period: 1 Apr
    # 2012 to 1 May 2012, Downgraded On: 21 Apr 2012, New Plan: $30/Month, Service Used: 20 days,
    # Amount for Period Used: $40, Prorated Amount: $20 ($60 - $40), Amount for the remaining 10
    # days in the current billing period: $10". 20 days used means the change took effect as the
    # 21st began (00:00), so the 21st is the new plan's.
    credit, charge = _change(D(60), D(30), at("2012-04-21"), at("2012-04-01"), at("2012-05-01"), "day")
    assert (credit, charge) == (-20, 10)


def test_lago_upgrade_on_january_15th() -> None:
    # getlago.com/docs/guide/subscriptions/upgrades-downgrades: "A customer subscribes to Plan A
    # (€100/month ...) on January 1st, then upgrades to Plan B (€200/month) on January 15th.
    # January 15th — Invoice for Plan A: 14 days prorated = €45.16 (14/31 × €100)"; and for Plan
    # B, 17 days (15-31 January) of €200: €109.68. Lago bills those in arrears; Tally bills the
    # fee in advance, so Plan A's €100 was billed and the change credits its unused 17 days.
    start, end, change = at("2026-01-01"), at("2026-02-01"), at("2026-01-15")
    credit, charge = _change(D(100), D(200), change, start, end, "day")
    assert D(100) + credit == D("45.16")  # what Plan A cost: 14/31 × €100
    assert charge == D("109.68")  # 17/31 × €200
    assert share_of_period(start, change, start, end, "day") == D(14) / 31


@pytest.mark.parametrize(
    ("start", "next_billing", "ratio"),
    [
        ("2023-05-23", "2023-06-15", "0.741935484"),  # 23 of the 31 days from 15 May to 15 June
        ("2023-06-23", "2023-07-15", "0.733333333"),  # 22 of 30
        ("2023-02-23", "2023-03-15", "0.714285714"),  # 20 of 28 (February)
        ("2024-02-23", "2024-03-15", "0.724137931"),  # 21 of 29 (a leap year's February)
    ],
)
def test_kill_bill_leading_proration(start: str, next_billing: str, ratio: str) -> None:
    # github.com/killbill/killbill, invoice/src/test/java/org/killbill/billing/invoice/generator/
    # TestInvoiceDateUtilsWithoutFixedProration.java, testProRationBeforeFirstBillingPeriod: a
    # MONTHLY plan starting on `start` with its billing cycle day on `next_billing`'s; Kill Bill
    # divides whole days and keeps 9 decimals (half up).
    end = at(next_billing)
    period_start = at(f"{end.year - (end.month == 1)}-{(end.month - 2) % 12 + 1:02d}-{end.day:02d}")
    share = share_of_period(at(start), end, period_start, end, "day")
    assert share.quantize(D("0.000000001"), rounding=ROUND_HALF_UP) == D(ratio)


# --- Properties -----------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def tiers_with_flat_fees(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.lists(st.integers(min_value=1, max_value=5_000), unique=True, max_size=4)))
    priced = [Tier(D(b), draw(prices), draw(prices)) for b in bounds]
    return (*priced, Tier(None, draw(prices), draw(prices)))


@given(tiers_with_flat_fees(), quantities, quantities)
def test_graduated_with_flat_fees_never_decreases(tiers: tuple[Tier, ...], a: D, b: D) -> None:
    low, high = sorted((a, b))
    terms = ChargeTerms("graduated", tiers=tiers)
    assert rate(terms, low) <= rate(terms, high)


@given(tiers_with_flat_fees(), quantities)
def test_volume_flat_fee_is_added_once_for_the_tier_reached(tiers: tuple[Tier, ...], q: D) -> None:
    plain = ChargeTerms("volume", tiers=tuple(Tier(t.up_to, t.unit_price) for t in tiers))
    reached = next(t for t in tiers if t.up_to is None or q <= t.up_to)
    assert rate(ChargeTerms("volume", tiers=tiers), q) == rate(plain, q) + (reached.flat_fee if q > 0 else 0)


@given(
    st.integers(min_value=1, max_value=1_000), st.decimals(min_value=0, max_value=100, places=2), quantities, quantities
)
def test_package_rounded_down_is_at_most_one_package_below_rounded_up(size: int, price: D, a: D, b: D) -> None:
    up = ChargeTerms("package", package_size=D(size), package_price=price)
    down = ChargeTerms("package", package_size=D(size), package_price=price, rounding="down")
    assert rate(up, a) - price <= rate(down, a) <= rate(up, a)
    low, high = sorted((a, b))
    assert rate(down, low) <= rate(down, high)


@given(st.lists(st.decimals(min_value=0, max_value=10_000, places=2), max_size=30), prices, quantities)
def test_percentage_by_event_equals_by_total_without_per_event_terms(values: list[D], percent: D, free: D) -> None:
    terms = ChargeTerms("percentage", percentage_rate=percent, included=free)
    assert rate_events(terms, values) == rate(terms, sum(values, D(0)))


@given(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 31)),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 31)),
)
def test_day_shares_of_the_parts_of_a_period_add_up_to_one(a: datetime, b: datetime) -> None:
    start, end = at("2026-01-01"), at("2026-02-01")
    first, second = sorted((a.replace(tzinfo=UTC), b.replace(tzinfo=UTC)))
    parts = [(start, first), (first, second), (second, end)]
    days = []
    for s, e in parts:
        share = share_of_period(s, e, start, end, "day")
        whole_days = (share * 31).to_integral_value()
        assert share == whole_days / D(31)  # a whole number of days, divided as billing divides
        days.append(whole_days)
    assert sum(days) == 31


# --- Usage charged in advance (seats) -----------------------------------------------------------


def _seats(unit_price: D, billed: D, rises: list[tuple[datetime, D]], start: datetime, end: datetime, proration: str):  # type: ignore[no-untyped-def]
    seat = AdvanceCharge(uuid.uuid4(), uuid.uuid4(), "seats", ChargeTerms("per_unit", unit_price=unit_price))
    found = period_adjustments(
        billed=[(seat, billed)],
        phases=[AdvancePhase(start, (seat,), proration)],
        levels_at_start={"seats": billed},
        readings=[Reading(moment, "seats", value) for moment, value in rises],
        period_start=start,
        period_end=end,
    )
    return [(amount.kind, D(round_to_minor(amount.amount, "USD")) / 100) for amount in found]


def test_stripe_seat_added_halfway_is_billed_5_usd_on_the_next_invoice() -> None:
    # docs.stripe.com/billing/subscriptions/prorations: "Changing the price or quantity both result
    # in a proration"; "If a customer upgrades from a 10 USD monthly plan to a 20 USD option halfway
    # through the billing period, the customer is billed an additional 5 USD: -5 USD for unused
    # time on the original 10 USD plan, +10 USD for the remaining time"; "positive prorations
    # aren't immediately billed" (the default proration_behavior, create_prorations). Per seat:
    # 1 seat at 10 USD (10 USD a month) becomes 2 (20 USD) halfway through April, 16 April 00:00.
    # Stripe shows the -5 and +10 as two items; Tally bills the rise as one top-up, their sum.
    start, end = at("2026-04-01"), at("2026-05-01")
    seat = AdvanceCharge(uuid.uuid4(), uuid.uuid4(), "seats", ChargeTerms("per_unit", unit_price=D(10)))
    assert advance_amount(seat, D(1), at=start, scale=D(1)).amount == 10  # billed in advance on 1 April
    assert _seats(D(10), D(1), [(at("2026-04-16"), D(2))], start, end, "exact") == [("top_up", D(5))]


def test_lago_seat_prorated_for_22_days_of_30() -> None:
    # getlago.com/docs/guide/plans/charges/prorated-vs-full: "Let's consider the example of
    # prorated Seats, where each seat costs $10. If a new seat is added ... the unit will be
    # prorated for 22 days ... Example: (1 Seat x $10), used for 22 days = $7.33". $7.33 is 22 of
    # 30 days; the doc's dates (June 10th in one version, July 10th in another) leave 21 of 30 and
    # 22 of 31, so the date here is ours: a 30-day September, the seat added as the 9th begins
    # (day-based, Lago's convention: 9 to 30 September is 22 days).
    start, end = at("2026-09-01"), at("2026-10-01")
    assert _seats(D(10), D(3), [(at("2026-09-09"), D(4))], start, end, "day") == [("top_up", D("7.33"))]
    # A seat added during the 9th: the day of the change counts as used at the old value.
    assert _seats(D(10), D(3), [(at("2026-09-09T15:00:00"), D(4))], start, end, "day") == [("top_up", D(7))]


def test_ours_a_fall_is_not_credited_and_the_next_rise_bills_only_above_what_was_billed() -> None:
    # Ours, not a published example: a fall inside the period is not credited (the next period
    # bills the lower value). Stripe's default would credit it on the next invoice (a negative
    # proration; proration_behavior "none" does not); Tally keeps what was billed in advance, like
    # a fee: 5 seats billed; 3 on the 10th; 6 on the 20th: 1 seat above the 5, for 11 of 30 days.
    start, end = at("2026-09-01"), at("2026-10-01")
    rises = [(at("2026-09-10"), D(3)), (at("2026-09-20"), D(6))]
    assert _seats(D(30), D(5), rises, start, end, "day") == [("top_up", D(11))]
