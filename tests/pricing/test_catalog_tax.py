"""Tax rates and currency options in the catalog: every problem named by its path, nothing written
on any; applied, a changed rate or price is a new version and issued history stays as it was."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.catalog import parse_catalog
from pricing.errors import CatalogInvalid
from pricing.repository import current_tax_rates, latest_version_of
from pricing.service import apply_catalog, charges_of_version
from tests.conftest import now

METER = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"
"""
PLAN = """
[[plans]]
key = "pro"
name = "Pro"
currency = "USD"
interval = "month"
base_fee = "20.00"

  [[plans.charges]]
  meter = "calls"
  model = "graduated"
  tiers = [{ up_to = 100, unit_price = "0" }, { up_to = "inf", unit_price = "0.04" }]
"""
EUR = """
  [plans.currency_options.EUR]
  base_fee = "18.00"
  charges = [{ tiers = [{ up_to = 100, unit_price = "0" }, { up_to = "inf", unit_price = "0.035" }] }]
"""


def rate(value: str, *, country: str = '"FR"', extra: str = "") -> str:
    return f"""
[[tax_rates]]
key = "vat"
name = "VAT"
rate = {value}
country = {country}
{extra}
"""


def problems(catalog: str) -> dict[str, str]:
    with pytest.raises(CatalogInvalid) as raised:
        parse_catalog(catalog)
    return {problem.path: problem.message for problem in raised.value.problems}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"-1"', "must not be negative"),
        ("-1", "must not be negative"),
        ('"100"', "a percent below 100 (20 is 20 %)"),
        ('"1000000000000000000000000000000"', "a percent below 100 (20 is 20 %)"),
        ('"abc"', "'abc' is not a decimal number"),
        ("20.0", 'write 20.0 as a decimal string (e.g. "0.04") so it stays exact'),
        ('"20.00001"', "at most 4 decimal places"),
        ('"NaN"', "'NaN' is not a finite decimal number"),
    ],
)
def test_a_hostile_rate_is_named_by_its_path(value: str, message: str) -> None:
    assert problems(rate(value)) == {"tax_rates[0].rate": message}


def test_unknown_country_unknown_field_and_a_key_declared_twice() -> None:
    assert problems(rate('"20"', country='"XX"')) == {
        "tax_rates[0].country": "'XX' is not an ISO 3166-1 alpha-2 country code (e.g. FR, DE)"
    }
    assert problems(rate('"20"', country='"france"'))["tax_rates[0].country"].startswith("'france' is not")
    assert problems(rate('"20"', country='"EU"'))["tax_rates[0].country"].startswith("'EU' is not")
    assert problems(rate('"20"', extra='compound = true\ninclusive = "yes"')) == {
        "tax_rates[0].compound": "unknown field (expected one of: country, inclusive, key, name, rate, region)",
        "tax_rates[0].inclusive": "must be true or false",
    }
    assert problems(rate('"20"') + rate('"5.5"')) == {"tax_rates[1].key": "'vat' is declared twice"}


def test_a_rate_of_zero_and_a_regional_rate_are_accepted() -> None:
    spec = parse_catalog(rate('"0"') + rate('"9.975"', country='"CA"', extra='region = "QC"').replace('"vat"', '"qst"'))
    assert [(r.key, r.rate, r.country, r.region) for r in spec.tax_rates] == [
        ("vat", Decimal(0), "FR", None),
        ("qst", Decimal("9.975"), "CA", "QC"),
    ]


def test_currency_options_are_validated_like_the_plan() -> None:
    spec = parse_catalog(METER + PLAN + EUR)
    [plan] = spec.plans
    eur = plan.in_currency("EUR")
    assert eur is not None and eur.base_fee == Decimal("18.00")
    assert eur.charges[0].tiers[1].unit_price == Decimal("0.035")
    assert plan.in_currency("GBP") is None
    assert problems(METER + PLAN + EUR.replace("EUR", "XYZ")) == {
        "plans[0].currency_options.XYZ": "unknown currency 'XYZ': use an ISO 4217 code such as USD or EUR"
    }
    assert problems(METER + PLAN + EUR.replace("EUR", "USD")) == {
        "plans[0].currency_options.USD": "the plan is priced in USD already"
    }
    no_charges = '  [plans.currency_options.EUR]\n  base_fee = "18.00"\n'
    assert problems(METER + PLAN + no_charges) == {
        "plans[0].currency_options.EUR.charges": "must give the prices of each of the plan's 1 charge(s), in order"
    }
    assert problems(METER + PLAN + EUR.replace('base_fee = "18.00"', 'base_fee = "-1"')) == {
        "plans[0].currency_options.EUR.base_fee": "must not be negative"
    }
    jpy = '  [plans.currency_options.JPY]\n  base_fee = "18.5"\n  charges = [{ tiers = [] }]\n'
    found = problems(METER + PLAN + jpy)
    assert found["plans[0].currency_options.JPY.base_fee"] == "18.5 is not payable in JPY: too many decimal places"
    assert "plans[0].currency_options.JPY.charges[0].tiers" in found
    meddling = EUR.replace("charges = [{ tiers", "charges = [{ included = 5, tiers")
    assert problems(METER + PLAN + meddling) == {
        "plans[0].currency_options.EUR.charges[0].included": "unknown field (expected one of: fixed_fee, minimum, "
        "package_price, per_event_maximum, per_event_minimum, tiers, unit_price)"
    }


async def test_a_plan_in_two_currencies_is_a_version_each_and_a_changed_price_versions_both(
    session: AsyncSession,
) -> None:
    changes = await apply_catalog(session, METER + PLAN + EUR, as_of=now())
    await session.commit()
    assert [(c.kind, c.key, c.action) for c in changes] == [("meter", "calls", "create"), ("plan", "pro", "create")]
    usd = await latest_version_of(session, "pro", "USD")
    eur = await latest_version_of(session, "pro", "EUR")
    assert usd is not None and eur is not None
    assert (usd[1].currency, usd[1].version, usd[1].base_fee) == ("USD", 1, Decimal("20.00"))
    assert (eur[1].currency, eur[1].version, eur[1].base_fee) == ("EUR", 1, Decimal("18.00"))
    [(eur_charge, _)] = await charges_of_version(session, eur[1].id)
    assert eur_charge.tiers[1]["unit_price"] == "0.035"
    # No prices in GBP: the plan's own currency, for the caller to refuse.
    gbp = await latest_version_of(session, "pro", "GBP")
    assert gbp is not None and gbp[1].currency == "USD"
    assert [c.action for c in await apply_catalog(session, METER + PLAN + EUR, as_of=now())] == ["unchanged"] * 2
    changes = await apply_catalog(session, METER + PLAN + EUR.replace('"18.00"', '"19.00"'), as_of=now())
    await session.commit()
    assert changes[1].action == "new_version"
    newer = await latest_version_of(session, "pro", "EUR")
    assert newer is not None and (newer[1].version, newer[1].base_fee) == (2, Decimal("19.00"))


async def test_a_changed_tax_rate_is_a_new_version_and_rows_are_immutable(session: AsyncSession) -> None:
    changes = await apply_catalog(session, rate('"20"'), as_of=now())
    assert [(c.kind, c.key, c.action) for c in changes] == [("tax_rate", "vat", "create")]
    await session.commit()
    assert [c.action for c in await apply_catalog(session, rate('"20.0"'), as_of=now())] == ["unchanged"]
    changes = await apply_catalog(session, rate('"5.5"'), as_of=now())
    await session.commit()
    assert [c.action for c in changes] == ["new_version"]
    [current] = await current_tax_rates(session)
    assert (current.version, current.rate) == (2, Decimal("5.5"))
    with pytest.raises(DBAPIError, match="immutable"):
        await session.execute(text("UPDATE tax_rates SET rate = 1"))
    await session.rollback()


async def test_a_bad_rate_writes_nothing(session: AsyncSession) -> None:
    with pytest.raises(CatalogInvalid):
        await apply_catalog(session, METER + PLAN + rate('"-1"'), as_of=now())
    await session.rollback()
    assert await current_tax_rates(session) == []
    assert await latest_version_of(session, "pro") is None
