"""The working shown under a usage line: pure, and never in disagreement with the line."""

from __future__ import annotations

from decimal import Decimal

from billing.documents.breakdown import breakdown
from pricing.rating import ChargeTerms, Tier

GRADUATED = ChargeTerms(
    model="graduated",
    included=Decimal(1000),
    tiers=(Tier(Decimal(2000), Decimal("0.10")), Tier(None, Decimal("0.05"), Decimal(5))),
)


def test_graduated_tiers_after_the_allowance_add_up_to_the_line() -> None:
    found = breakdown(GRADUATED, Decimal(4500), Decimal("280.00"))
    assert found is not None and found.allowance_used == 1000
    assert [(b.number, b.units, b.unit_price, b.flat_fee) for b in found.tiers] == [
        (1, 2000, Decimal("0.10"), 0),
        (2, 1500, Decimal("0.05"), 5),
    ]
    assert sum(b.amount_exact for b in found.tiers) == Decimal("280.00")


def test_usage_inside_the_allowance_shows_the_allowance_only() -> None:
    found = breakdown(GRADUATED, Decimal(600), Decimal(0))
    assert found is not None and found.allowance_used == 600 and found.tiers == []


def test_a_volume_charge_shows_the_one_tier_reached() -> None:
    volume = ChargeTerms(model="volume", tiers=(Tier(Decimal(100), Decimal(1), Decimal(3)), Tier(None, Decimal("0.5"))))
    found = breakdown(volume, Decimal(50), Decimal(53))
    assert found is not None and [(b.number, b.units, b.amount_exact) for b in found.tiers] == [(1, 50, 53)]
    assert breakdown(volume, Decimal(500), Decimal(250)) is None  # one tier, no fee: the line says it all


def test_terms_that_do_not_rate_to_the_line_show_no_working() -> None:
    """A price override or a prorated allowance billed the line: the catalog's terms would disagree."""
    assert breakdown(GRADUATED, Decimal(4500), Decimal("279.99")) is None
