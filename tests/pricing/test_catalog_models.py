"""The catalog's newer pricing terms: flat fees per tier, stair steps, package rounding, percentage
charges and the proration convention; what each bad value is called; and that plans written
before these terms existed keep their pricing hash (so re-applying them makes no new version)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.catalog import parse_catalog
from pricing.errors import CatalogInvalid
from pricing.service import apply_catalog, charge_terms, list_plans, pricing_hash
from tests.conftest import CONTRACT, now

METERS = """
[[meters]]
key = "calls"
name = "Calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[meters]]
key = "payments"
name = "Payments"
unit = "USD"
event_type = "payment.settled"
aggregation = "sum"
value_property = "amount"
"""


def plan(charge: str, *, proration: str = "") -> str:
    return f"""{METERS}
[[plans]]
key = "p"
name = "P"
currency = "USD"
interval = "month"
base_fee = "10.00"
{proration}

  [[plans.charges]]
{charge}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as raised:
        parse_catalog(text)
    return [str(p) for p in raised.value.problems]


ALL_MODELS = plan(
    """  meter = "calls"
  model = "volume"
  tiers = [{ up_to = 5, unit_price = "7", flat_fee = "0" }, { up_to = "inf", unit_price = "6", flat_fee = "30" }]

  [[plans.charges]]
  meter = "calls"
  model = "stair_step"
  tiers = [{ up_to = 10, flat_fee = "100" }, { up_to = "inf", flat_fee = "300" }]

  [[plans.charges]]
  meter = "calls"
  model = "package"
  package_size = 100
  package_price = "1"
  rounding = "down"

  [[plans.charges]]
  meter = "payments"
  model = "percentage"
  rate = "2.9"
  fixed_fee = "0.30"
  free_events = 3
  included = "500"
  per_event_minimum = "0.50"
  per_event_maximum = "12"
""",
    proration='proration = "day"',
)


def test_every_new_term_reads_exactly() -> None:
    [spec] = parse_catalog(ALL_MODELS).plans
    volume, steps, package, percentage = spec.charges
    assert spec.proration == "day"
    assert [(t.up_to, t.unit_price, t.flat_fee) for t in volume.tiers] == [
        (Decimal(5), Decimal(7), Decimal(0)),
        (None, Decimal(6), Decimal(30)),
    ]
    assert [(t.up_to, t.flat_fee) for t in steps.tiers] == [(Decimal(10), Decimal(100)), (None, Decimal(300))]
    assert package.rounding == "down"
    assert (percentage.percentage_rate, percentage.fixed_fee, percentage.free_events) == (
        Decimal("2.9"),
        Decimal("0.30"),
        3,
    )
    assert (percentage.per_event_minimum, percentage.per_event_maximum, percentage.included) == (
        Decimal("0.50"),
        Decimal(12),
        Decimal(500),
    )


@pytest.mark.parametrize(
    ("charge", "expected"),
    [
        (
            'meter = "payments"\nmodel = "percentage"\nrate = "-1"',
            "plans[0].charges[0].rate: must not be negative",
        ),
        (
            'meter = "payments"\nmodel = "percentage"\nrate = "100.5"',
            "plans[0].charges[0].rate: 100.5 is a percentage: it must be between 0 and 100",
        ),
        ('meter = "payments"\nmodel = "percentage"', "plans[0].charges[0].rate: is required"),
        (
            'meter = "calls"\nmodel = "percentage"\nrate = "2"',
            "plans[0].charges[0].meter: a percentage charge takes a share of each event's value: "
            "meter 'calls' must be a sum meter, not count",
        ),
        (
            'meter = "payments"\nmodel = "percentage"\nrate = "2"\nper_event_minimum = "5"\nper_event_maximum = "1"',
            "plans[0].charges[0].per_event_minimum: 5 is above per_event_maximum 1",
        ),
        (
            'meter = "payments"\nmodel = "percentage"\nrate = "2"\nfree_events = "1.5"',
            "plans[0].charges[0].free_events: at most 0 decimal places",
        ),
        (
            'meter = "calls"\nmodel = "per_unit"\nunit_price = "1"\nfixed_fee = "1"',
            "plans[0].charges[0].fixed_fee: is not used by a per_unit charge",
        ),
        (
            'meter = "calls"\nmodel = "graduated"\n'
            'tiers = [{ up_to = 10, unit_price = "1" }, { up_to = 5, unit_price = "1" }, { up_to = "inf", unit_price = "1" }]',
            "plans[0].charges[0].tiers: up_to must increase",
        ),
        (
            'meter = "calls"\nmodel = "volume"\ntiers = [{ up_to = "inf", unit_price = "1", flat_fee = "-2" }]',
            "plans[0].charges[0].tiers[0].flat_fee: must not be negative",
        ),
        (
            'meter = "calls"\nmodel = "stair_step"\ntiers = [{ up_to = "inf", unit_price = "1" }]',
            "plans[0].charges[0].tiers[0].unit_price: unknown field (expected one of: flat_fee, up_to)",
        ),
        (
            'meter = "calls"\nmodel = "stair_step"\ntiers = [{ up_to = "inf" }]',
            "plans[0].charges[0].tiers[0].flat_fee: is required",
        ),
        (
            'meter = "calls"\nmodel = "package"\npackage_size = 0\npackage_price = "1"',
            "plans[0].charges[0].package_size: must be greater than zero",
        ),
        (
            'meter = "calls"\nmodel = "package"\npackage_size = 10\npackage_price = "1"\nrounding = "nearest"',
            "plans[0].charges[0].rounding: 'nearest' is not one of up, down (a started package costs a whole "
            "one, or only whole packages are charged)",
        ),
        (
            'meter = "calls"\nmodel = "per_unit"\nunit_price = "1"\nrounding = "down"',
            "plans[0].charges[0].rounding: is not used by a per_unit charge",
        ),
    ],
)
def test_bad_terms_name_their_field(charge: str, expected: str) -> None:
    assert expected in problems_of(plan(charge))


def test_an_unknown_proration_convention_names_its_field() -> None:
    text = plan('meter = "calls"\nmodel = "per_unit"\nunit_price = "1"', proration='proration = "hourly"')
    assert problems_of(text) == ["plans[0].proration: 'hourly' is not one of exact, day"]


# The contract example's hashes as the code before these terms computed them: the terms appear in
# the pricing document only when they say something, so no existing plan gets a new version.
CONTRACT_HASHES = {
    "hobby": "35393e6a98bd337498933bb8a9964c3b20a45650d29e977aed6db5d4da955a0f",
    "pro": "cbabc1be25d7d53cc57ffd2983ee62f4b32f96210a8d8ed6561a5d43976b9062",
    "team": "82400a2fa17e36d3435219d9ca40f088be291a08cd89e78319c343046dfb5787",
}


def test_plans_declared_before_keep_their_pricing_hash() -> None:
    spec = parse_catalog((CONTRACT / "catalog.example.toml").read_text())
    assert {p.key: pricing_hash(p) for p in spec.plans} == CONTRACT_HASHES
    explicit = (
        (CONTRACT / "catalog.example.toml")
        .read_text()
        .replace('package_price = "0.50"', 'package_price = "0.50"\n  rounding = "up"')
        .replace('base_fee = "20.00"', 'base_fee = "20.00"\nproration = "exact"')
    )
    assert {p.key: pricing_hash(p) for p in parse_catalog(explicit).plans} == CONTRACT_HASHES


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('flat_fee = "30"', 'flat_fee = "31"'),
        ('rounding = "down"', 'rounding = "up"'),
        ('rate = "2.9"', 'rate = "3.9"'),
        ("free_events = 3", "free_events = 4"),
        ('proration = "day"', 'proration = "exact"'),
    ],
)
def test_each_new_term_is_part_of_the_pricing(old: str, new: str) -> None:
    [before] = parse_catalog(ALL_MODELS).plans
    [after] = parse_catalog(ALL_MODELS.replace(old, new)).plans
    assert pricing_hash(before) != pricing_hash(after)


async def test_the_new_terms_are_stored_and_read_back(session: AsyncSession) -> None:
    dry = await apply_catalog(session, ALL_MODELS, as_of=now(), dry_run=True)
    assert [(c.key, c.action) for c in dry if c.kind == "plan"] == [("p", "create")]
    await apply_catalog(session, ALL_MODELS, as_of=now())
    await session.commit()
    [view] = [v for v in await list_plans(session) if v.plan.key == "p"]
    assert view.version.proration == "day"
    terms = [charge_terms(charge) for charge, _ in view.charges]
    assert [t.model for t in terms] == ["volume", "stair_step", "package", "percentage"]
    assert terms[0].tiers[1].flat_fee == 30
    assert terms[1].tiers[0].flat_fee == 100
    assert terms[2].rounding == "down"
    assert (terms[3].percentage_rate, terms[3].fixed_fee, terms[3].free_events) == (Decimal("2.9"), Decimal("0.3"), 3)
    again = await apply_catalog(session, ALL_MODELS, as_of=now())
    assert [(c.key, c.action) for c in again if c.kind == "plan"] == [("p", "unchanged")]
