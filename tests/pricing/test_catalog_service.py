"""Applying a catalog to the database: validated first, versioned, idempotent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from pricing.errors import CatalogInvalid
from pricing.models import Meter, PlanCharge, PlanVersion
from pricing.service import apply_catalog, list_plans
from tests.conftest import CONTRACT, now

EXAMPLE = (CONTRACT / "catalog.example.toml").read_text()


async def count(session: AsyncSession, model: type) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_the_contract_example_applies_cleanly(session: AsyncSession) -> None:
    changes = await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    assert [(c.kind, c.key, c.action) for c in changes] == [
        ("meter", "requests", "create"),
        ("meter", "tokens", "create"),
        ("meter", "seats", "create"),
        ("plan", "hobby", "create"),
        ("plan", "pro", "create"),
        ("plan", "team", "create"),
    ]
    plans = {view.plan.key: view for view in await list_plans(session)}
    assert plans["pro"].version.version == 1
    assert plans["pro"].base_fee == Decimal("20.00")
    assert [charge.model for charge, _ in plans["pro"].charges] == ["graduated", "per_unit", "package"]
    assert await count(session, PlanCharge) == 6


async def test_reapplying_an_unchanged_file_changes_nothing(session: AsyncSession) -> None:
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    changes = await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    assert {c.action for c in changes} == {"unchanged"}
    assert await count(session, PlanVersion) == 3


async def test_a_changed_price_is_a_new_version_and_the_old_one_stays(session: AsyncSession) -> None:
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    changed = EXAMPLE.replace('base_fee = "20.00"', 'base_fee = "25.00"')
    changes = await apply_catalog(session, changed, as_of=now())
    await session.commit()
    assert [c.key for c in changes if c.action == "new_version"] == ["pro"]
    fees = (
        await session.execute(
            text(
                "SELECT v.version, v.base_fee FROM plan_versions v JOIN plans p ON p.id = v.plan_id "
                "WHERE p.key = 'pro' ORDER BY v.version"
            )
        )
    ).all()
    assert [(v, Decimal(f)) for v, f in fees] == [(1, Decimal("20.00")), (2, Decimal("25.00"))]


async def test_dry_run_writes_nothing(session: AsyncSession) -> None:
    changes = await apply_catalog(session, EXAMPLE, as_of=now(), dry_run=True)
    await session.commit()
    assert len(changes) == 6
    assert await count(session, Meter) == 0


async def test_an_invalid_file_writes_nothing(session: AsyncSession) -> None:
    broken = EXAMPLE.replace('{ up_to = 2000, unit_price = "0.04" }', '{ up_to = 100, unit_price = "0.04" }')
    with pytest.raises(CatalogInvalid) as raised:
        await apply_catalog(session, broken, as_of=now())
    assert [str(p) for p in raised.value.problems] == ["plans[1].charges[0].tiers: up_to must increase"]
    await session.commit()
    assert await count(session, Meter) == 0


async def test_what_a_meter_counts_cannot_change_under_its_usage(session: AsyncSession) -> None:
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    changed = EXAMPLE.replace('aggregation = "sum"', 'aggregation = "max"')
    with pytest.raises(CatalogInvalid) as raised:
        await apply_catalog(session, changed, as_of=now())
    assert [p.path for p in raised.value.problems] == ["meters[1].aggregation"]


async def test_plan_versions_are_immutable_in_the_database(session: AsyncSession) -> None:
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    with pytest.raises(DBAPIError, match="immutable"):
        await session.execute(text("UPDATE plan_versions SET base_fee = 1"))
    await session.rollback()


async def test_allow_negative_changes_in_place_and_says_so(session: AsyncSession) -> None:
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    allowing = EXAMPLE.replace('value_property = "tokens"', 'value_property = "tokens"\nallow_negative = true')
    changes = await apply_catalog(session, allowing, as_of=now())
    assert [str(c) for c in changes if c.action != "unchanged"] == ["meter tokens: allow_negative = true"]
    await session.commit()
    meters = {m.key: m.allow_negative for m in (await session.execute(select(Meter))).scalars()}
    assert meters == {"requests": False, "tokens": True, "seats": False}


async def test_in_advance_on_a_sum_meter_in_the_database_is_refused_naming_the_field(session: AsyncSession) -> None:
    """The contract's ``tokens`` meter is a sum, already applied: a plan billing it in advance in a
    later file (which declares no meter) is refused by its field, and nothing is written."""
    await apply_catalog(session, EXAMPLE, as_of=now())
    await session.commit()
    plans_before = await count(session, PlanVersion)
    later = """
[[plans]]
key = "seats"
name = "Seats"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "tokens"
  model = "per_unit"
  unit_price = "0.01"
  billed = "in_advance"
"""
    with pytest.raises(CatalogInvalid) as raised:
        await apply_catalog(session, later, as_of=now())
    [problem] = raised.value.problems
    assert problem.path == "plans[0].charges[0].billed"
    assert "must be a latest or max meter, not sum" in problem.message
    await session.rollback()
    assert await count(session, PlanVersion) == plans_before


async def test_a_charge_billed_in_advance_is_stored_as_such(session: AsyncSession) -> None:
    seats = """
[[meters]]
key = "seats"
name = "Seats"
unit = "seat"
event_type = "seat.count"
aggregation = "latest"
value_property = "seats"

[[plans]]
key = "team"
name = "Team"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "12"
  billed = "in_advance"
"""
    await apply_catalog(session, seats, as_of=now())
    await session.commit()
    [charge] = (await session.execute(select(PlanCharge))).scalars().all()
    assert charge.billed == "in_advance"
