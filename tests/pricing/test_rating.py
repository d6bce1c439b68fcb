"""Rating rules, by example and by property."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.rating import ChargeTerms, Tier, allocate, rate

PRO_REQUESTS = ChargeTerms("graduated", tiers=(Tier(D(500), D(0)), Tier(D(2000), D("0.04")), Tier(None, D("0.03"))))
TEAM_SEATS = ChargeTerms("volume", tiers=(Tier(D(10), D("40.00")), Tier(None, D("32.00"))))
FAST_TOKENS = ChargeTerms("package", package_size=D(1_000_000), package_price=D("0.50"))
TEAM_REQUESTS = ChargeTerms("per_unit", unit_price=D("0.04"), included=D(500), minimum=D("5.00"))


@pytest.mark.parametrize(
    ("terms", "quantity", "amount"),
    [
        (PRO_REQUESTS, D(500), D(0)),
        (PRO_REQUESTS, D(501), D("0.04")),
        (PRO_REQUESTS, D(2000), D("60.00")),
        (PRO_REQUESTS, D(2500), D("75.00")),
        (TEAM_SEATS, D(10), D("400.00")),
        (TEAM_SEATS, D(11), D("352.00")),
        (FAST_TOKENS, D(0), D(0)),
        (FAST_TOKENS, D(1), D("0.50")),
        (FAST_TOKENS, D(1_000_000), D("0.50")),
        (FAST_TOKENS, D(1_000_001), D("1.00")),
        (TEAM_REQUESTS, D(0), D("5.00")),
        (TEAM_REQUESTS, D(700), D("8.00")),
        (ChargeTerms("per_unit", unit_price=D("0.000003")), D(1_234_567), D("3.703701")),
    ],
)
def test_examples(terms: ChargeTerms, quantity: D, amount: D) -> None:
    assert rate(terms, quantity) == amount


quantities = st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False)


@given(quantities, quantities)
def test_graduated_never_decreases_and_adds_up_by_tier(a: D, b: D) -> None:
    low, high = sorted((a, b))
    assert rate(PRO_REQUESTS, low) <= rate(PRO_REQUESTS, high)
    expected = max(min(high, D(2000)) - 500, D(0)) * D("0.04") + max(high - 2000, D(0)) * D("0.03")
    assert rate(PRO_REQUESTS, high) == expected


@given(quantities)
def test_volume_prices_every_unit_at_the_tier_reached(q: D) -> None:
    assert rate(TEAM_SEATS, q) == q * (D("40.00") if q <= 10 else D("32.00"))


@given(quantities, st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False))
def test_included_and_minimum(q: D, minimum: D) -> None:
    terms = ChargeTerms("per_unit", unit_price=D("0.04"), included=D(500), minimum=minimum)
    assert rate(terms, q) == max(max(q - 500, D(0)) * D("0.04"), minimum)


@given(
    st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False),
    st.lists(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False), min_size=1, max_size=8),
)
def test_allocation_adds_up_exactly(amount: D, weights: list[D]) -> None:
    parts = allocate(amount, weights)
    assert len(parts) == len(weights)
    assert sum(parts, D(0)) == amount


# Boundaries. One set of tiers for the tiered models, each price different so that a unit
# priced by the wrong tier shows: up to 100 at 0.10, up to 1000 at 0.08, then 0.05.
THREE_TIERS = (Tier(D(100), D("0.10")), Tier(D(1000), D("0.08")), Tier(None, D("0.05")))
GRADUATED = ChargeTerms("graduated", tiers=THREE_TIERS)
VOLUME = ChargeTerms("volume", tiers=THREE_TIERS)
PACKAGE = ChargeTerms("package", package_size=D(100), package_price=D("2.50"))
PER_UNIT = ChargeTerms("per_unit", unit_price=D("0.04"))


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        (D(1), D("0.10")),  # 1 × 0.10
        (D(99), D("9.90")),  # 99 × 0.10
        (D(100), D("10.00")),  # 100 × 0.10: the 100th unit is still the first tier's
        (D(101), D("10.08")),  # 10.00 + 1 × 0.08
        (D("100.001"), D("10.00008")),  # 10.00 + 0.001 × 0.08
        (D(999), D("81.92")),  # 10.00 + 899 × 0.08 = 10.00 + 71.92
        (D(1000), D("82.00")),  # 10.00 + 900 × 0.08 = 10.00 + 72.00
        (D(1001), D("82.05")),  # 82.00 + 1 × 0.05
        (D("1000.5"), D("82.025")),  # 82.00 + 0.5 × 0.05
        (D(3000), D("182.00")),  # 82.00 + 2000 × 0.05
    ],
)
def test_graduated_around_each_boundary(quantity: D, amount: D) -> None:
    assert rate(GRADUATED, quantity) == amount


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        (D(1), D("0.10")),  # 1 × 0.10
        (D(99), D("9.90")),  # 99 × 0.10
        (D(100), D("10.00")),  # 100 × 0.10: 100 still reaches only the first tier
        (D(101), D("8.08")),  # 101 × 0.08: every unit at the second tier
        (D("100.001"), D("8.00008")),  # 100.001 × 0.08
        (D(999), D("79.92")),  # 999 × 0.08
        (D(1000), D("80.00")),  # 1000 × 0.08
        (D(1001), D("50.05")),  # 1001 × 0.05
        (D("1000.5"), D("50.025")),  # 1000.5 × 0.05
        (D(3000), D("150.00")),  # 3000 × 0.05
    ],
)
def test_volume_around_each_boundary(quantity: D, amount: D) -> None:
    assert rate(VOLUME, quantity) == amount


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        (D("0.5"), D("2.50")),  # half a unit starts the first package
        (D(1), D("2.50")),  # 1 package
        (D(99), D("2.50")),  # 1 package
        (D(100), D("2.50")),  # exactly 1 full package
        (D(101), D("5.00")),  # 2 started packages × 2.50
        (D("100.001"), D("5.00")),  # 2 started packages × 2.50
        (D(199), D("5.00")),  # 2 × 2.50
        (D(200), D("5.00")),  # 2 × 2.50
        (D(201), D("7.50")),  # 3 × 2.50
        (D(1000), D("25.00")),  # 10 × 2.50
        (D(1001), D("27.50")),  # 11 × 2.50
    ],
)
def test_package_around_each_boundary(quantity: D, amount: D) -> None:
    assert rate(PACKAGE, quantity) == amount


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        (D(1), D("0.04")),  # 1 × 0.04
        (D("0.5"), D("0.02")),  # 0.5 × 0.04
        (D(100), D("4.00")),  # 100 × 0.04
        (D(3000), D("120.00")),  # 3000 × 0.04
    ],
)
def test_per_unit_prices_every_unit_alike(quantity: D, amount: D) -> None:
    assert rate(PER_UNIT, quantity) == amount


# The allowance comes off before the tiers: with 50 included, each boundary moves up by 50.
@pytest.mark.parametrize(
    ("terms", "quantity", "amount"),
    [
        (ChargeTerms("per_unit", unit_price=D("0.04"), included=D(50)), D(49), D(0)),  # 0 billable
        (ChargeTerms("per_unit", unit_price=D("0.04"), included=D(50)), D(50), D(0)),  # 0 billable
        (ChargeTerms("per_unit", unit_price=D("0.04"), included=D(50)), D(51), D("0.04")),  # 1 × 0.04
        (ChargeTerms("per_unit", unit_price=D("0.04"), included=D(50)), D("50.5"), D("0.02")),  # 0.5 × 0.04
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(50), D(0)),  # 0 billable
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(51), D("0.10")),  # 1 × 0.10
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(149), D("9.90")),  # 99 × 0.10
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(150), D("10.00")),  # 100 × 0.10
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(151), D("10.08")),  # 10.00 + 0.08
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(1050), D("82.00")),  # 10.00 + 900 × 0.08
        (ChargeTerms("graduated", tiers=THREE_TIERS, included=D(50)), D(1051), D("82.05")),  # 82.00 + 0.05
        (ChargeTerms("volume", tiers=THREE_TIERS, included=D(50)), D(50), D(0)),  # 0 billable
        (ChargeTerms("volume", tiers=THREE_TIERS, included=D(50)), D(150), D("10.00")),  # 100 × 0.10
        (ChargeTerms("volume", tiers=THREE_TIERS, included=D(50)), D(151), D("8.08")),  # 101 × 0.08
        (ChargeTerms("volume", tiers=THREE_TIERS, included=D(50)), D(1050), D("80.00")),  # 1000 × 0.08
        (ChargeTerms("volume", tiers=THREE_TIERS, included=D(50)), D(1051), D("50.05")),  # 1001 × 0.05
        (ChargeTerms("package", package_size=D(100), package_price=D("2.50"), included=D(50)), D(50), D(0)),
        (ChargeTerms("package", package_size=D(100), package_price=D("2.50"), included=D(50)), D(51), D("2.50")),
        (ChargeTerms("package", package_size=D(100), package_price=D("2.50"), included=D(50)), D(150), D("2.50")),
        (ChargeTerms("package", package_size=D(100), package_price=D("2.50"), included=D(50)), D(151), D("5.00")),
    ],
)
def test_included_allowance_moves_every_boundary(terms: ChargeTerms, quantity: D, amount: D) -> None:
    assert rate(terms, quantity) == amount


# The minimum's own boundary: 0.04 a unit after 500 included reaches 5.00 at 625 (125 × 0.04).
@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        (D(500), D("5.00")),  # 0 billable: the minimum
        (D(624), D("5.00")),  # 124 × 0.04 = 4.96 < 5.00
        (D(625), D("5.00")),  # 125 × 0.04 = 5.00
        (D(626), D("5.04")),  # 126 × 0.04 = 5.04 > 5.00
    ],
)
def test_minimum_is_a_floor_not_a_fee(quantity: D, amount: D) -> None:
    assert rate(TEAM_REQUESTS, quantity) == amount


# Zero usage. A tier's or package's price is never a fee for showing up: nothing used, nothing
# owed, unless a minimum says otherwise; usage inside the allowance is the same as none.
ZERO_USAGE_TERMS = [
    pytest.param(PER_UNIT, id="per_unit"),
    pytest.param(GRADUATED, id="graduated"),
    pytest.param(VOLUME, id="volume"),
    pytest.param(PACKAGE, id="package"),
]


@pytest.mark.parametrize("terms", ZERO_USAGE_TERMS)
@pytest.mark.parametrize(
    ("included", "minimum", "quantity", "amount"),
    [
        (D(0), None, D(0), D(0)),
        (D(0), D("7.50"), D(0), D("7.50")),
        (D(0), D(0), D(0), D(0)),
        (D(500), None, D(0), D(0)),
        (D(500), None, D(500), D(0)),  # all of it included
        (D(500), D("7.50"), D(0), D("7.50")),
        (D(500), D("7.50"), D(500), D("7.50")),
    ],
)
def test_zero_usage(terms: ChargeTerms, included: D, minimum: D | None, quantity: D, amount: D) -> None:
    assert rate(replace(terms, included=included, minimum=minimum), quantity) == amount


# Large quantities and tiny prices: every digit kept, the result an exact Decimal.
TERA = D(10**12)
PICO = D("0.000000000001")


@pytest.mark.parametrize(
    ("terms", "quantity", "amount"),
    [
        # 10^12 × 10^-12
        (ChargeTerms("per_unit", unit_price=PICO), TERA, D(1)),
        # (10^12 + 1) × 10^-12
        (ChargeTerms("per_unit", unit_price=PICO), TERA + 1, D("1.000000000001")),
        # 10^12 × 0.123456789012: the price's decimal point moves 12 places
        (ChargeTerms("per_unit", unit_price=D("0.123456789012")), TERA, D("123456789012")),
        # (10^12 − 1) × (1 − 10^-12) = 10^12 − 1 − 1 + 10^-12
        (ChargeTerms("per_unit", unit_price=D("0.999999999999")), TERA - 1, D("999999999998.000000000001")),
        # 1 unit at 10^-12 (the smallest price) after 10^12 − 1 included
        (ChargeTerms("per_unit", unit_price=PICO, included=TERA - 1), TERA, PICO),
        # 0 billable: a minimum of 10^-12 still applies
        (ChargeTerms("per_unit", unit_price=PICO, included=TERA, minimum=PICO), TERA, PICO),
        # 1 billable unit at 10^-12 against a minimum of 2 × 10^-12
        (ChargeTerms("per_unit", unit_price=PICO, included=TERA - 1, minimum=2 * PICO), TERA, D("0.000000000002")),
        # 10^6 × 3·10^-12 + (10^9 − 10^6) × 2·10^-12 + (10^12 − 10^9) × 10^-12
        # = 0.000003 + 0.001998 + 0.999
        (
            ChargeTerms("graduated", tiers=(Tier(D(10**6), 3 * PICO), Tier(D(10**9), 2 * PICO), Tier(None, PICO))),
            TERA,
            D("1.001001"),
        ),
        # the same + 1 × 10^-12
        (
            ChargeTerms("graduated", tiers=(Tier(D(10**6), 3 * PICO), Tier(D(10**9), 2 * PICO), Tier(None, PICO))),
            TERA + 1,
            D("1.001001000001"),
        ),
        # 10^9 × 2·10^-12
        (ChargeTerms("volume", tiers=(Tier(D(10**9), 2 * PICO), Tier(None, PICO))), D(10**9), D("0.002")),
        # (10^9 + 1) × 10^-12
        (ChargeTerms("volume", tiers=(Tier(D(10**9), 2 * PICO), Tier(None, PICO))), D(10**9 + 1), D("0.001000000001")),
        # 10^12 × 10^-12
        (ChargeTerms("volume", tiers=(Tier(D(10**9), 2 * PICO), Tier(None, PICO))), TERA, D(1)),
        # 10^12 / 10^6 = 10^6 packages × 10^-12
        (ChargeTerms("package", package_size=D(10**6), package_price=PICO), TERA, D("0.000001")),
        # 10^6 + 1 started packages × 10^-12
        (ChargeTerms("package", package_size=D(10**6), package_price=PICO), TERA + 1, D("0.000001000001")),
        # 3 × 333333333333 = 999999999999, so 10^12 starts package 333333333334; × 10^-12
        (ChargeTerms("package", package_size=D(3), package_price=PICO), TERA, D("0.333333333334")),
    ],
)
def test_large_quantities_and_tiny_prices_are_exact(terms: ChargeTerms, quantity: D, amount: D) -> None:
    result = rate(terms, quantity)
    assert isinstance(result, D)
    assert result == amount


# Properties: every model against a naive reference that walks the billable units one by one
# (whole units only, few enough to stay fast).
MAX_UNITS = 3000
unit_prices = st.decimals(min_value=0, max_value=100, places=12, allow_nan=False, allow_infinity=False)
minimums = st.none() | st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.lists(st.integers(min_value=1, max_value=MAX_UNITS), unique=True, max_size=4)))
    prices = draw(st.lists(unit_prices, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return (*(Tier(D(b), p) for b, p in zip(bounds, prices[:-1], strict=True)), Tier(None, prices[-1]))


@st.composite
def terms_and_quantities(draw: st.DrawFn, model: str) -> tuple[ChargeTerms, int]:
    included = draw(st.integers(min_value=0, max_value=MAX_UNITS // 2))
    minimum = draw(minimums)
    if model == "per_unit":
        terms = ChargeTerms(model, unit_price=draw(unit_prices), included=D(included), minimum=minimum)
        edges = [0]
    elif model == "package":
        size = draw(st.integers(min_value=1, max_value=MAX_UNITS // 2))
        terms = ChargeTerms(
            model, package_size=D(size), package_price=draw(unit_prices), included=D(included), minimum=minimum
        )
        edges = [0, size, 2 * size]
    else:
        terms = ChargeTerms(model, tiers=draw(tier_lists()), included=D(included), minimum=minimum)
        edges = [0, *(int(t.up_to) for t in terms.tiers if t.up_to is not None)]
    # Half the time, land on (or next to) a boundary as the quantity sees it: shifted by the allowance.
    near_edges = [included + edge + step for edge in edges for step in (-1, 0, 1) if included + edge + step >= 0]
    quantity = draw(st.integers(min_value=0, max_value=MAX_UNITS) | st.sampled_from(near_edges))
    return terms, quantity


def tier_of(tiers: tuple[Tier, ...], unit: int) -> Tier:
    """The first tier whose inclusive bound holds the unit (the last one is unbounded)."""
    return next(t for t in tiers if t.up_to is None or unit <= t.up_to)


def rate_unit_by_unit(terms: ChargeTerms, quantity: int) -> D:
    billable = max(quantity - int(terms.included), 0)
    amount = D(0)
    for unit in range(1, billable + 1):
        if terms.model == "per_unit":
            assert terms.unit_price is not None
            amount += terms.unit_price
        elif terms.model == "graduated":
            amount += tier_of(terms.tiers, unit).unit_price
        elif terms.model == "volume":
            amount += tier_of(terms.tiers, billable).unit_price
        elif terms.model == "package":
            assert terms.package_size is not None and terms.package_price is not None
            if (unit - 1) % int(terms.package_size) == 0:  # this unit opens a new package
                amount += terms.package_price
    if terms.minimum is not None and amount < terms.minimum:
        return terms.minimum
    return amount


@pytest.mark.parametrize("model", ["per_unit", "graduated", "volume", "package"])
@given(data=st.data())
def test_every_model_agrees_with_a_unit_by_unit_reference(model: str, data: st.DataObject) -> None:
    terms, quantity = data.draw(terms_and_quantities(model))
    assert rate(terms, D(quantity)) == rate_unit_by_unit(terms, quantity)


@pytest.mark.parametrize(
    ("terms", "quantity", "amount"),
    [
        # 0.123456789012 × 1000000000000.00001 = 123456789012 + 0.00000123456789012
        (
            ChargeTerms("per_unit", unit_price=D("0.123456789012")),
            D("1000000000000.00001"),
            D("123456789012.00000123456789012"),
        ),
        # a 30-digit price × 1 keeps all 30 digits
        (
            ChargeTerms("per_unit", unit_price=D("123456789012345678.123456789012")),
            D(1),
            D("123456789012345678.123456789012"),
        ),
        # 10^12 + 10^-16 units in packages of 1 is 10^12 + 1 started packages at 0.01
        (
            ChargeTerms("package", package_size=D(1), package_price=D("0.01")),
            D("1000000000000.0000000000000001"),
            D("10000000000.01"),
        ),
    ],
)
def test_more_digits_than_the_default_decimal_context_stay_exact(terms: ChargeTerms, quantity: D, amount: D) -> None:
    assert rate(terms, quantity) == amount
