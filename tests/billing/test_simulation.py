"""Price simulation on real stored usage, worked out by hand; nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices.simulation import PeriodSelection, simulate_pricing
from customers.lifecycle import CANCEL, PAUSE
from customers.service import NewCustomer, create_customer
from pricing.errors import CatalogInvalid
from tests.billing.lifecycle_support import lifecycle
from tests.billing.scenario import CATALOG, FEB_28, JAN_31, MAR_31, send_calls, subscribe

# Basic becomes 15.00 a month with 50 calls included at 0.20.
DRAFT = CATALOG.replace('base_fee = "10.00"', 'base_fee = "15.00"').replace(
    'unit_price = "0.10"\n  included = 100', 'unit_price = "0.20"\n  included = 50'
)

FEB_14 = datetime(2026, 2, 14, tzinfo=UTC)


async def test_each_affected_customer_is_re_rated_period_by_period(
    session: AsyncSession, billing_catalog: None
) -> None:
    await subscribe(session, "heavy", "basic", JAN_31)
    await subscribe(session, "light", "basic", JAN_31)
    await subscribe(session, "other", "plus", JAN_31)  # plus is unchanged by the draft: not affected
    await send_calls(session, "heavy", 300, datetime(2026, 2, 10, tzinfo=UTC))
    await send_calls(session, "heavy", 100, datetime(2026, 3, 10, tzinfo=UTC))
    await send_calls(session, "light", 40, datetime(2026, 3, 10, tzinfo=UTC))
    summary = await simulate_pricing(
        session,
        catalog_text=DRAFT,
        selection=PeriodSelection(start=JAN_31, end=MAR_31),
        as_of=datetime(2026, 4, 2, tzinfo=UTC),
    )
    by_customer = {o.customer_key: o for o in summary.outcomes}
    assert set(by_customer) == {"heavy", "light"}
    heavy, light = by_customer["heavy"], by_customer["light"]
    # heavy, now: Feb 10.00 + (300-100) x 0.10 = 30.00; Mar 10.00 + 0 = 10.00 -> 40.00
    # heavy, draft: Feb 15.00 + (300-50) x 0.20 = 65.00; Mar 15.00 + 50 x 0.20 = 25.00 -> 90.00
    assert (heavy.periods, heavy.current, heavy.simulated, heavy.difference) == (2, 4000, 9000, 5000)
    assert heavy.change_percent == 125
    # light: 10.00 + 10.00 now; 15.00 + 15.00 under the draft (40 calls stay inside 50 included)
    assert (light.current, light.simulated, light.change_percent) == (2000, 3000, 50)
    assert summary.current_by_currency == {"USD": 6000} and summary.simulated_by_currency == {"USD": 12000}
    assert summary.distribution["above +20%"] == 2
    assert [o.customer_key for o in summary.biggest_movers] == ["heavy", "light"]
    assert (await session.execute(text("SELECT count(*) FROM plan_versions"))).scalar_one() == 2


async def test_the_last_n_periods_and_a_named_customer(session: AsyncSession, billing_catalog: None) -> None:
    await subscribe(session, "heavy", "basic", JAN_31)
    await subscribe(session, "light", "basic", JAN_31)
    await send_calls(session, "heavy", 300, datetime(2026, 2, 10, tzinfo=UTC))
    summary = await simulate_pricing(
        session,
        catalog_text=DRAFT,
        selection=PeriodSelection(start=None, end=FEB_28, last=3),
        as_of=FEB_28,
        customer_external_ids=["heavy"],
    )
    [heavy] = summary.outcomes
    assert (heavy.customer_key, heavy.periods, heavy.current, heavy.simulated) == ("heavy", 1, 3000, 6500)


async def test_a_draft_with_errors_is_reported_per_field_and_nothing_is_simulated(
    session: AsyncSession, billing_catalog: None
) -> None:
    broken = DRAFT.replace('model = "per_unit"', 'model = "per_unitt"', 1).replace(
        'interval = "month"', 'interval = "fortnight"', 1
    )
    with pytest.raises(CatalogInvalid) as invalid:
        await simulate_pricing(session, catalog_text=broken, selection=PeriodSelection(JAN_31, MAR_31), as_of=MAR_31)
    assert [p.path for p in invalid.value.problems] == ["plans[0].interval", "plans[0].charges[0].model"]


async def test_each_customer_is_simulated_over_its_own_periods_and_active_time(
    session: AsyncSession, billing_catalog: None
) -> None:
    """Basic (10.00, 100 included at 0.10) against the draft (15.00, 50 included at 0.20), over the
    periods that end by Mar 31 (February is Jan 31 to Feb 28, 28 days; Feb 14 is its middle)."""
    paused = await subscribe(session, "paused", "basic", JAN_31)
    await lifecycle(session, paused, PAUSE, as_of=FEB_14)  # and stays paused through March
    gone = await subscribe(session, "gone", "basic", JAN_31)
    await lifecycle(session, gone, CANCEL, as_of=FEB_14, timing="IMMEDIATELY")
    for external_id, started, extra in (
        ("trying", JAN_31, {"trial_days": 14}),
        ("aligned", datetime(2026, 2, 15, tzinfo=UTC), {"billing_anchor_day": 1}),
    ):
        new = NewCustomer(
            external_id=external_id, name=external_id, currency="USD", plan_key="basic", started_at=started, **extra
        )
        await create_customer(session, new, as_of=started)
        await session.commit()
    await send_calls(session, "trying", 300, datetime(2026, 2, 10, tzinfo=UTC))  # in the free trial
    await send_calls(session, "trying", 120, datetime(2026, 3, 1, tzinfo=UTC))
    await send_calls(session, "aligned", 60, datetime(2026, 2, 20, tzinfo=UTC))
    as_of = datetime(2026, 4, 2, tzinfo=UTC)
    summary = await simulate_pricing(
        session, catalog_text=DRAFT, selection=PeriodSelection(JAN_31, MAR_31), as_of=as_of
    )
    outcomes = {o.customer_key: (o.periods, o.current, o.simulated) for o in summary.outcomes}
    assert outcomes == {
        # Half of February active, March paused: 10.00 x 1/2 now, 15.00 x 1/2 under the draft.
        "paused": (2, 500, 750),
        # Canceled in the middle of February: that period only, its first half.
        "gone": (1, 500, 750),
        # The trial (its 300 calls free) and Feb 14 to Mar 14: 10.00 + 20 x 0.10 = 12.00 now,
        # 15.00 + 70 x 0.20 = 29.00 under the draft.
        "trying": (2, 1200, 2900),
        # The stub Feb 15 to Mar 1 is half of February: half the fee and half the allowance,
        # 5.00 + (60 - 50) x 0.10 = 6.00 now, 7.50 + (60 - 25) x 0.20 = 14.50 under the draft.
        "aligned": (1, 600, 1450),
    }
    floored = DRAFT.replace('base_fee = "15.00"', 'base_fee = "15.00"\nminimum_spend = "40.00"', 1)
    summary = await simulate_pricing(
        session,
        catalog_text=floored,
        selection=PeriodSelection(JAN_31, MAR_31),
        as_of=as_of,
        customer_external_ids=["paused"],
    )
    # February owes 40.00 x 1/2 = 20.00 (7.50 of fee, 12.50 of true-up); paused March owes nothing.
    assert [(o.current, o.simulated) for o in summary.outcomes] == [(500, 2000)]
