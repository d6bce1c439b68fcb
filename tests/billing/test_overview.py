"""The overview's figures: the MRR movement arithmetic (pure) and the aging buckets."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.insights.overview import aging_bucket, monthly_amount, mrr_movements

fees = st.dictionaries(
    st.tuples(st.integers(0, 8), st.sampled_from(["USD", "EUR"])),
    st.decimals(min_value=0, max_value=10_000, places=4),
    max_size=12,
)


@given(fees, fees)
def test_mrr_movement_adds_up_from_the_start_to_now(at_start: dict, at_now: dict) -> None:
    for found in mrr_movements(at_start, at_now):
        assert found.start + found.new + found.expansion - found.contraction - found.churned == found.now
        assert found.start == sum((v for k, v in at_start.items() if k[1] == found.currency), Decimal(0))
        assert found.now == sum((v for k, v in at_now.items() if k[1] == found.currency), Decimal(0))


def test_each_customer_moves_one_way_and_currencies_stay_apart() -> None:
    at_start = {
        ("a", "USD"): Decimal(100),
        ("b", "USD"): Decimal(50),
        ("c", "USD"): Decimal(30),
        ("d", "EUR"): Decimal(9),
    }
    at_now = {
        ("a", "USD"): Decimal(120),
        ("b", "USD"): Decimal(20),
        ("e", "USD"): Decimal(10),
        ("d", "EUR"): Decimal(9),
    }
    (usd,) = (m for m in mrr_movements(at_start, at_now) if m.currency == "USD")
    assert (usd.new, usd.expansion, usd.contraction, usd.churned) == (10, 20, 30, 30)
    assert (usd.start, usd.now, usd.customers) == (180, 150, 3)
    (eur,) = (m for m in mrr_movements(at_start, at_now) if m.currency == "EUR")
    assert (eur.start, eur.now, eur.new, eur.churned) == (9, 9, 0, 0)


def test_a_fee_counts_for_its_monthly_worth() -> None:
    assert monthly_amount(Decimal(1200), "year") == 100
    assert monthly_amount(Decimal(300), "quarter") == 100
    assert monthly_amount(Decimal(12), "week") == 52


def test_aging_buckets_count_days_past_the_due_date() -> None:
    assert aging_bucket(-3, past_due=False) == "current"
    assert aging_bucket(0, past_due=True) == "1–30 days"
    assert [aging_bucket(d, past_due=True) for d in (30, 31, 60, 61, 90, 91, 400)] == [
        "1–30 days",
        "31–60 days",
        "31–60 days",
        "61–90 days",
        "61–90 days",
        "over 90 days",
        "over 90 days",
    ]
