"""The catalog reader: the contract's example is valid, and every problem is named with its path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.catalog import parse_catalog
from pricing.errors import CatalogInvalid
from pricing.service import pricing_hash
from tests.conftest import CONTRACT, DEMO_CATALOG


def problems_of(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as raised:
        parse_catalog(text)
    return [str(p) for p in raised.value.problems]


def test_the_contract_example_reads_exactly() -> None:
    spec = parse_catalog((CONTRACT / "catalog.example.toml").read_text())
    assert [m.key for m in spec.meters] == ["requests", "tokens", "seats"]
    assert [p.key for p in spec.plans] == ["hobby", "pro", "team"]
    pro = spec.plans[1]
    assert pro.base_fee == Decimal("20.00")
    graduated = pro.charges[0]
    assert [(t.up_to, t.unit_price) for t in graduated.tiers] == [
        (Decimal(500), Decimal(0)),
        (Decimal(2000), Decimal("0.04")),
        (None, Decimal("0.03")),
    ]
    assert pro.charges[1].unit_price == Decimal("0.000003")
    assert dict(pro.charges[2].where) == {"model": "fast-1"}
    team_requests = spec.plans[2].charges[1]
    assert (team_requests.included, team_requests.minimum) == (Decimal(500), Decimal("5.00"))
    assert spec.plans[0].charges[0].limit == Decimal(50)


def test_the_demo_catalog_is_the_contract_example() -> None:
    assert DEMO_CATALOG.read_text() == (CONTRACT / "catalog.example.toml").read_text()


def test_every_problem_is_reported_with_item_and_field() -> None:
    problems = problems_of("""
[[meters]]
key = "requests"
name = "Requests"
unit = "request"
event_type = "request.completed"
aggregation = "count"

[[meters]]
key = "Bad Key"
name = "x"
unit = "x"
event_type = "x"
aggregation = "median"

[[plans]]
key = "pro"
name = "Pro"
currency = "XYZ"
interval = "fortnight"
base_fee = 20.0

  [[plans.charges]]
  meter = "requests"
  model = "graduated"
  tiers = [{ up_to = 500, unit_price = "0" }, { up_to = 100, unit_price = "0.04" }, { up_to = "inf", unit_price = "0.03" }]

  [[plans.charges]]
  meter = "nope"
  model = "per_unit"
  unit_prise = "1"
""")
    assert "plans[0].charges[0].tiers: up_to must increase" in problems
    assert any(p.startswith("meters[1].key:") for p in problems)
    assert any(p.startswith("meters[1].aggregation: 'median' is not one of") for p in problems)
    assert any(p.startswith("plans[0].currency: unknown currency 'XYZ'") for p in problems)
    assert any(p.startswith("plans[0].interval:") for p in problems)
    assert any(p.startswith("plans[0].base_fee:") and "decimal string" in p for p in problems)
    assert any(p.startswith("plans[0].charges[1].meter: no meter 'nope'") for p in problems)
    assert any(p.startswith("plans[0].charges[1].unit_prise: unknown field") for p in problems)
    assert "plans[0].charges[1].unit_price: is required" in problems


@pytest.mark.parametrize(
    ("charge", "expected"),
    [
        ('model = "per_unit"\nunit_price = "0.0000000000001"', "unit_price: at most 12 decimal places"),
        (
            'model = "package"\npackage_size = 0\npackage_price = "1"',
            "package_size: must be greater than zero",
        ),
        (
            'model = "volume"\ntiers = [{ up_to = 10, unit_price = "1" }]',
            'tiers: the last tier must go up to "inf"',
        ),
        ('model = "per_unit"\nunit_price = "-1"', "unit_price: must not be negative"),
        ('model = "per_unit"\nunit_price = "1"\ntiers = []', "tiers: is not used by a per_unit charge"),
        ('model = "per_unit"\nunit_price = "1"\nminimum = "0.001"', "minimum: 0.001 is not payable in USD"),
    ],
)
def test_charge_rules(charge: str, expected: str) -> None:
    text = f"""
[[meters]]
key = "m"
name = "M"
unit = "u"
event_type = "e"
aggregation = "count"

[[plans]]
key = "p"
name = "P"
currency = "usd"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "m"
  {charge}
"""
    assert any(p.endswith(expected) or expected in p for p in problems_of(text)), problems_of(text)


def test_sum_meter_needs_its_value_property() -> None:
    problems = problems_of('[[meters]]\nkey = "t"\nname = "T"\nunit = "t"\nevent_type = "e"\naggregation = "sum"\n')
    assert problems == ["meters[0].value_property: is required for a sum meter"]


def test_not_toml_is_one_clear_problem() -> None:
    assert problems_of("[[meters]\nkey=")[0].startswith("file: not valid TOML")


PLAN_TEMPLATE = """
[[meters]]
key = "m"
name = "M"
unit = "u"
event_type = "e"
aggregation = "count"

[[plans]]
key = "p"
name = "{name}"
currency = "USD"
interval = "month"
base_fee = "{fee}"

  [[plans.charges]]
  meter = "m"
  model = "per_unit"
  unit_price = "{price}"
"""


@given(
    cents=st.integers(min_value=0, max_value=10**9),
    price=st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False),
    trailing=st.integers(min_value=0, max_value=6),
)
def test_the_same_prices_spelled_differently_are_the_same_version(cents: int, price: Decimal, trailing: int) -> None:
    """20, 20.0 and 20.00 must not create a new plan version; a different price must."""
    fee = Decimal(cents).scaleb(-2)
    plain = parse_catalog(PLAN_TEMPLATE.format(name="P", fee=f"{fee}", price=f"{price}")).plans[0]
    padded = parse_catalog(
        PLAN_TEMPLATE.format(
            name="Renamed",
            fee=f"{fee:.2f}",
            price=f"{price:.{max(6, -price.as_tuple().exponent) + trailing}f}",
        )
    ).plans[0]
    assert pricing_hash(plain) == pricing_hash(padded)
    dearer = parse_catalog(PLAN_TEMPLATE.format(name="P", fee=f"{fee + Decimal('0.01')}", price=f"{price}")).plans[0]
    assert pricing_hash(dearer) != pricing_hash(plain)


def test_a_where_filter_must_name_a_dimension_of_the_meter() -> None:
    text = (
        (CONTRACT / "catalog.example.toml")
        .read_text()
        .replace('where = { model = "large-1" }', 'where = { region = "eu" }')
    )
    assert problems_of(text) == [
        "plans[1].charges[1].where.region: meter 'tokens' does not split usage by 'region'; "
        "add it to the meter's group_by"
    ]


METER = """
[[meters]]
key = "balance"
name = "Balance"
unit = "unit"
event_type = "balance.changed"
"""


def test_a_meter_that_reads_a_value_may_allow_negative_values() -> None:
    spec = parse_catalog(METER + 'aggregation = "sum"\nvalue_property = "delta"\nallow_negative = true\n')
    assert spec.meters[0].allow_negative is True
    assert parse_catalog(METER + 'aggregation = "max"\nvalue_property = "v"\n').meters[0].allow_negative is False


def test_allow_negative_is_a_boolean_on_a_meter_that_reads_a_value() -> None:
    assert problems_of(METER + 'aggregation = "sum"\nvalue_property = "v"\nallow_negative = "yes"\n') == [
        "meters[0].allow_negative: must be true or false"
    ]
    assert problems_of(METER + 'aggregation = "count"\nallow_negative = true\n') == [
        "meters[0].allow_negative: a count meter reads no value that could be negative"
    ]


ADVANCE_CATALOG = """
[[meters]]
key = "seats"
name = "Seats"
unit = "seat"
event_type = "seat.count"
aggregation = "{aggregation}"
value_property = "seats"

[[plans]]
key = "team"
name = "Team"
currency = "USD"
interval = "month"
base_fee = "20"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10"
  {billed}
"""


@pytest.mark.parametrize("aggregation", ["latest", "max"])
def test_a_level_can_be_billed_in_advance(aggregation: str) -> None:
    """Seats: a latest or max meter's value billed at the period's start; the default is in arrears,
    left out of the pricing document so plans declared before the option keep their version."""
    [advance] = parse_catalog(ADVANCE_CATALOG.format(aggregation=aggregation, billed='billed = "in_advance"')).plans
    [arrears] = parse_catalog(ADVANCE_CATALOG.format(aggregation=aggregation, billed="")).plans
    [explicit] = parse_catalog(ADVANCE_CATALOG.format(aggregation=aggregation, billed='billed = "in_arrears"')).plans
    assert advance.charges[0].billed == "in_advance" and arrears.charges[0].billed == "in_arrears"
    assert "billed" not in arrears.charges[0].pricing_document()
    assert pricing_hash(arrears) == pricing_hash(explicit) != pricing_hash(advance)


@pytest.mark.parametrize("aggregation", ["sum", "unique_count"])
def test_only_a_level_can_be_billed_in_advance(aggregation: str) -> None:
    """A sum (or a count of distinct values) is a volume over the period, known only at its end."""
    text = ADVANCE_CATALOG.format(aggregation=aggregation, billed='billed = "in_advance"')
    assert problems_of(text) == [
        "plans[0].charges[0].billed: only a level can be billed in advance: meter 'seats' must be a latest "
        f"or max meter, not {aggregation}"
    ]


def test_billed_is_in_arrears_or_in_advance() -> None:
    text = ADVANCE_CATALOG.format(aggregation="latest", billed='billed = "upfront"')
    [problem] = problems_of(text)
    assert problem.startswith("plans[0].charges[0].billed: 'upfront' is not one of in_arrears, in_advance")
