"""The lifecycle on the billing calendar: a cancel of a calendar-aligned stub credits the unused
days of the stub, a cancel inside a trial bills no fee and leaves nothing due, a cancel at the
period's end inside a trial takes effect when the trial ends. Worked out by hand (November 2026
has 30 days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices.service import due_customers
from customers.lifecycle import CANCEL
from customers.service import subscriptions_of
from metering.entitlements import entitlement
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import WINDOW, all_lines, bill, lifecycle, send_calls, subscribe
from tests.billing.scenario import invoices_of

CATALOG = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[plans]]
key = "aligned"
name = "Aligned"
currency = "USD"
interval = "month"
base_fee = "50.00"
billing_anchor = "calendar"

[[plans]]
key = "trying"
name = "Trying"
currency = "USD"
interval = "month"
base_fee = "30.00"
trial_days = 14

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"
"""


def nov(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


@pytest.fixture
async def catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=nov(1) - timedelta(days=60))
    await session.commit()


async def test_a_cancel_of_a_calendar_stub_credits_the_unused_days_of_the_stub(
    session: AsyncSession, catalog: None
) -> None:
    """Aligned (50.00, periods from the 1st) from Nov 16: the stub to Dec 1 bills 50 × 15/30 =
    25.00 in advance. Canceled on Nov 21, 10 of its 15 days unused: 25.00 × 10/15 = 16.67 back,
    the same as 10 of November's 30 days of the full fee."""
    customer_id = await subscribe(session, "stub-quits", "aligned", nov(16))
    await bill(session, customer_id, nov(16))
    outcome = await lifecycle(session, customer_id, CANCEL, as_of=nov(21), timing="IMMEDIATELY", key="stub-1")
    assert [(line.kind, line.amount) for line in await all_lines(session, customer_id)] == [
        ("base_fee", 2500),
        ("proration", -1667),
    ]
    assert [invoice.total for invoice in outcome.issued] == [-1667]
    await bill(session, customer_id, datetime(2027, 2, 1, tzinfo=UTC))
    assert len(await invoices_of(session, customer_id)) == 2, "nothing is billed after the final invoice"
    assert customer_id not in await due_customers(session, as_of=datetime(2027, 2, 1, tzinfo=UTC), window=WINDOW)


async def test_a_cancel_inside_a_trial_bills_no_fee_and_nothing_after_it(session: AsyncSession, catalog: None) -> None:
    """Trying (30.00, a 14-day trial with free usage) from Nov 1, canceled on Nov 5: the trial
    billed no fee, so nothing is credited; its usage is free; no paid period ever follows, and the
    edge is told the subscription is canceled."""
    customer_id = await subscribe(session, "trial-quits", "trying", nov(1))
    await bill(session, customer_id, nov(1))
    await send_calls(session, "trial-quits", 5, nov(3))
    await lifecycle(session, customer_id, CANCEL, as_of=nov(5), timing="IMMEDIATELY", key="trial-1")
    await bill(session, customer_id, datetime(2027, 1, 1, tzinfo=UTC))
    invoices = await invoices_of(session, customer_id)
    assert [invoice.total for invoice in invoices] == [0, 0]
    assert await all_lines(session, customer_id) == []
    found = await entitlement(session, customer_id, "calls", suspended=False, as_of=nov(6))
    assert found is not None and (found.allowed, found.reason) == (False, "SUBSCRIPTION_CANCELED")


async def test_a_cancel_at_the_period_end_inside_a_trial_ends_the_subscription_with_the_trial(
    session: AsyncSession, catalog: None
) -> None:
    """The period in progress during a trial is the trial itself: a cancel at its end takes
    effect on Nov 15, when the first paid period would have begun, and no fee is ever billed."""
    customer_id = await subscribe(session, "trial-ends", "trying", nov(1))
    await bill(session, customer_id, nov(1))
    await lifecycle(session, customer_id, CANCEL, as_of=nov(5), timing="PERIOD_END", key="trial-2")
    subscription = (await subscriptions_of(session, [customer_id]))[customer_id]
    assert subscription.cancel_at == nov(15)
    await bill(session, customer_id, datetime(2027, 1, 1, tzinfo=UTC))
    assert [(invoice.period_end, invoice.total) for invoice in await invoices_of(session, customer_id)] == [
        (nov(15), 0),
        (nov(15), 0),
    ]
