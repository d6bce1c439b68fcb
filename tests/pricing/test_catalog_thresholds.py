"""``invoice_threshold`` in the catalog: an amount payable in the plan's currency (and in each
currency option's), every bad value named by its path with nothing written; stored on the version,
and adding one to a plan makes a new version (existing subscriptions keep theirs)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.catalog import parse_catalog
from pricing.errors import CatalogInvalid
from pricing.models import PlanVersion
from pricing.repository import latest_version_of
from pricing.service import apply_catalog, pricing_hash
from tests.conftest import now
from tests.pricing.test_catalog_tax import EUR, METER, PLAN


def with_threshold(value: str, option: str = "") -> str:
    plan = PLAN.replace('base_fee = "20.00"\n', f'base_fee = "20.00"\ninvoice_threshold = {value}\n')
    return METER + plan + option


def problems(catalog: str) -> dict[str, str]:
    with pytest.raises(CatalogInvalid) as raised:
        parse_catalog(catalog)
    return {problem.path: problem.message for problem in raised.value.problems}


EUR_THRESHOLD = EUR.replace('base_fee = "18.00"', 'base_fee = "18.00"\n  invoice_threshold = "90.00"')


def test_a_threshold_is_read_exactly_in_each_currency() -> None:
    [plan] = parse_catalog(with_threshold('"100.00"', EUR_THRESHOLD)).plans
    assert plan.invoice_threshold == Decimal("100.00")
    eur = plan.in_currency("EUR")
    assert eur is not None and eur.invoice_threshold == Decimal("90.00")
    [without] = parse_catalog(METER + PLAN).plans
    assert without.invoice_threshold is None
    # A plan without one keeps the hash it always had; adding one changes it.
    assert "invoice_threshold" not in without.pricing_document()
    assert pricing_hash(plan) != pricing_hash(without)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"0"', "must be greater than zero"),
        ('"-5.00"', "must be greater than zero"),
        ("12.5", 'write 12.5 as a decimal string (e.g. "0.04") so it stays exact'),
        ("true", 'write True as a decimal string (e.g. "0.04") so it stays exact'),
        ('"ten dollars"', "'ten dollars' is not a decimal number"),
        ('"NaN"', "'NaN' is not a finite decimal number"),
        ('"Infinity"', "'Infinity' is not a finite decimal number"),
        ("[1, 2]", "[1, 2] is not a decimal number"),
        ('"100.001"', "100.001 is not payable in USD: too many decimal places"),
        ('"1e400"', "must be at most 1000000000"),
        ('"1000000000.01"', "must be at most 1000000000"),
        ('"0.0000000000001"', "at most 12 decimal places"),
        ('"' + "9" * 5000 + '"', "must be at most 1000000000"),
    ],
)
def test_a_bad_threshold_is_named_by_its_path(value: str, message: str) -> None:
    assert problems(with_threshold(value)) == {"plans[0].invoice_threshold": message}


def test_each_currency_option_needs_its_own_payable_threshold() -> None:
    assert problems(with_threshold('"100.00"', EUR)) == {
        "plans[0].currency_options.EUR.invoice_threshold": "is required: the plan invoices at a threshold in USD"
    }
    bad = EUR_THRESHOLD.replace('"90.00"', '"-1"')
    assert problems(with_threshold('"100.00"', bad)) == {
        "plans[0].currency_options.EUR.invoice_threshold": "must be greater than zero"
    }
    jpy = '  [plans.currency_options.JPY]\n  base_fee = "1800"\n  invoice_threshold = "9000.5"\n'
    jpy += '  charges = [{ tiers = [{ up_to = 100, unit_price = "0" }, { up_to = "inf", unit_price = "4" }] }]\n'
    assert problems(with_threshold('"100.00"', jpy)) == {
        "plans[0].currency_options.JPY.invoice_threshold": "9000.5 is not payable in JPY: too many decimal places"
    }


async def test_applied_the_threshold_is_on_each_version_and_adding_one_is_a_new_version(
    session: AsyncSession,
) -> None:
    await apply_catalog(session, METER + PLAN, as_of=now())
    await session.commit()
    await apply_catalog(session, with_threshold('"100.00"', EUR_THRESHOLD), as_of=now())
    await session.commit()
    found = await latest_version_of(session, "pro", "EUR")
    assert found is not None and found[1].version == 2 and found[1].invoice_threshold == Decimal("90.00")
    versions = (await session.exec(select(PlanVersion))).all()
    assert sorted((v.version, v.currency, v.invoice_threshold) for v in versions) == [
        (1, "USD", None),
        (2, "EUR", Decimal("90.00")),
        (2, "USD", Decimal("100.00")),
    ]
    with pytest.raises(CatalogInvalid):  # nothing written on a bad one
        await apply_catalog(session, with_threshold('"-1"'), as_of=now())
    await session.rollback()
    assert len((await session.exec(select(PlanVersion))).all()) == 3
