"""Rating rules, by example and by property."""

from __future__ import annotations

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
