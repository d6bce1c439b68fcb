"""A charge's terms in words, as the pricing page and ``Charge.summary`` show them."""

from decimal import Decimal

from pricing.describe import describe_charge
from pricing.rating import ChargeTerms, Tier


def test_prices_carry_the_currency_and_large_numbers_their_separators() -> None:
    graduated = ChargeTerms(
        model="graduated",
        tiers=(
            Tier(Decimal(500), Decimal(0)),
            Tier(Decimal(2000), Decimal("0.04"), Decimal(10)),
            Tier(None, Decimal("0.0004")),
        ),
        included=Decimal(1500),
        minimum=Decimal(1000),
    )
    assert describe_charge(graduated, "USD") == (
        "graduated, each tier prices its own units: up to 500 at 0 USD each; "
        "500 to 2,000 at 0.04 USD each + 10 USD flat; above 2,000 at 0.0004 USD each; "
        "1,500 included; at least 1,000 USD a period"
    )
    package = ChargeTerms(model="package", package_size=Decimal(1_000_000), package_price=Decimal("0.5"))
    assert describe_charge(package, "EUR") == "0.5 EUR per started package of 1,000,000"
