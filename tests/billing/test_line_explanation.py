"""An invoice line explains itself: the working from its quantity to its exact amount, in words,
only when the charge's terms rate back to that amount."""

from __future__ import annotations

from decimal import Decimal

from billing.documents.breakdown import explain_usage
from pricing.rating import ChargeTerms, Tier

D = Decimal


def test_a_per_unit_line_with_an_allowance() -> None:
    terms = ChargeTerms("per_unit", unit_price=D("0.04"), included=D(250))
    assert explain_usage(terms, D(314), D("2.56"), "call") == "314 calls, 250 included, 64 × 0.04 = 2.56"


def test_inside_the_allowance_and_thousands() -> None:
    terms = ChargeTerms("per_unit", unit_price=D("0.000003"), included=D(250))
    assert explain_usage(terms, D(200), D(0), "call") == "200 calls, 200 included, nothing billable"
    big = ChargeTerms("per_unit", unit_price=D("0.000003"))
    assert explain_usage(big, D(2_500_000), D("7.5"), "token") == "2,500,000 tokens, 2,500,000 × 0.000003 = 7.5"


def test_graduated_volume_package_and_a_minimum() -> None:
    tiers = (Tier(D(500), D(0)), Tier(D(2000), D("0.04")), Tier(None, D("0.03")))
    graduated = ChargeTerms("graduated", tiers=tiers)
    assert (
        explain_usage(graduated, D(2100), D("63"), "request")
        == "2,100 requests, 500 × 0 (tier 1) + 1,500 × 0.04 (tier 2) + 100 × 0.03 (tier 3) = 63"
    )
    volume = ChargeTerms("volume", tiers=(Tier(D(10), D(40)), Tier(None, D(32))))
    assert explain_usage(volume, D(12), D(384), "seat") == "12 seats, 12 × 32 (tier 2) = 384"
    package = ChargeTerms("package", package_size=D(1_000_000), package_price=D("0.5"))
    assert explain_usage(package, D(2_500_001), D("1.5"), "token") == (
        "2,500,001 tokens, 3 packages of 1,000,000 × 0.5 = 1.5"
    )
    floored = ChargeTerms("per_unit", unit_price=D("0.04"), included=D(500), minimum=D(5))
    assert explain_usage(floored, D(510), D(5), "request") == (
        "510 requests, 500 included, 10 × 0.04 = 0.4, raised to the minimum 5"
    )


def test_no_working_when_the_terms_do_not_rate_back_to_the_line() -> None:
    terms = ChargeTerms("per_unit", unit_price=D("0.04"), included=D(250))
    assert explain_usage(terms, D(314), D("3.00"), "call") is None, "an override or a prorated allowance"
