"""One-off charges, minimum spend and prepaid commitments beside the subscription lifecycle, the
day-based proration convention and a customer's own prices, worked out by hand (November 2026
has 30 days).

What was decided where the features meet:
- A minimum spend is owed for active time only, like the base fee: a paused part owes none, nor
  the time after a cancel; each part is measured in its plan version's proration convention.
- An immediate cancel's final invoice bills the pending one-off charges; a canceled subscription
  has no next invoice, so a charge for it is refused (charging now still works), and so is a
  minimum spend for it or from its scheduled end on.
- Usage at the customer's own price counts toward the minimum at that price, and a prepaid
  commitment pays for it like any invoice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window
from app.settings import Settings
from billing.invoices import charges_repository
from billing.invoices import service as billing
from billing.invoices.commitments import (
    CommitmentRequest,
    MinimumSpendRequest,
    create_prepaid_commitment,
    set_minimum_spend,
)
from billing.invoices.minimum_spend import MinimumPart, period_minimum
from billing.invoices.one_off import OneOffChargeRequest, create_one_off_charge
from billing.invoices.price_overrides import change_price_override
from billing.models import Invoice
from customers.lifecycle import CANCEL, PAUSE
from customers.price_overrides import ChargeSelector, PriceOverrideRequest
from ledger.errors import TallyError
from ledger.money import round_to_minor
from pricing.overrides import OverrideFields
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import CATALOG, all_lines, bill, lifecycle, send_calls, subscribe

FLOORS = """
[[plans]]
key = "floor"
name = "Floor"
currency = "USD"
interval = "month"
base_fee = "10.00"
minimum_spend = "50.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"

[[plans]]
key = "daily-floor"
name = "Daily floor"
currency = "USD"
interval = "month"
base_fee = "0"
minimum_spend = "30.00"
proration = "day"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"
"""
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC)


def nov(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
async def floors_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG + FLOORS, as_of=NOV_1 - timedelta(days=60))
    await session.commit()


def kinds_and_amounts(lines: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(line.kind, line.amount) for line in lines]


async def charge_later(
    session: AsyncSession, customer_id: uuid.UUID, key: str, *, as_of: datetime, timing: str
) -> tuple[uuid.UUID, Invoice | None]:
    request = OneOffChargeRequest(
        customer_id=customer_id,
        description="Setup",
        quantity=Decimal(1),
        unit_price=Decimal("25.00"),
        currency="USD",
        timing=timing,
        idempotency_key=key,
        actor="staff:test",
    )
    try:
        outcome = await create_one_off_charge(session, request, as_of=as_of)
    except TallyError:
        await session.rollback()
        raise
    charge_id = outcome.charge.id
    await session.commit()
    return charge_id, outcome.invoice


def minimum(customer_id: uuid.UUID, key: str, amount: str, effective_at: datetime) -> MinimumSpendRequest:
    return MinimumSpendRequest(
        customer_id=customer_id,
        amount=Decimal(amount),
        effective_at=effective_at,
        reason="contract",
        idempotency_key=key,
        actor="staff:finance",
    )


def cents(amount: Decimal | None) -> int | None:
    return None if amount is None else round_to_minor(amount, "USD")


def test_each_part_owes_its_minimum_in_its_own_proration_convention() -> None:
    """[Nov 1, Dec 1) cut at Nov 10 12:00. Whole days count the started day under the first
    part: 10 and 20 days of 30. Exact: 9.5 and 20.5 days. A part without a minimum (paused,
    canceled) owes nothing. (A share of a period is a ratio, like 10/30: the exact minimum is
    within a few units of the 28th digit of the amount, and the line rounds it.)"""
    cut = datetime(2026, 11, 10, 12, tzinfo=UTC)
    by_day = [MinimumPart(NOV_1, cut, Decimal(30), "day"), MinimumPart(cut, DEC_1, Decimal(60), "day")]
    assert cents(period_minimum(by_day, NOV_1, DEC_1)) == 1000 + 4000
    exact = [MinimumPart(NOV_1, cut, Decimal(30)), MinimumPart(cut, DEC_1, Decimal(60))]
    assert cents(period_minimum(exact, NOV_1, DEC_1)) == 950 + 4100
    paused_after = [MinimumPart(NOV_1, cut, Decimal(30), "day"), MinimumPart(cut, DEC_1, None, "day")]
    assert cents(period_minimum(paused_after, NOV_1, DEC_1)) == 1000
    assert period_minimum([MinimumPart(NOV_1, DEC_1, None)], NOV_1, DEC_1) is None


async def test_a_pause_owes_no_minimum_for_the_paused_time(session: AsyncSession, floors_catalog: None) -> None:
    """Floor (10.00 a month, at least 50.00 a month) from Nov 1; 100 calls on Nov 5 (10.00); paused
    on Nov 16, half of November. Active half: the minimum is 25.00, spent 10.00 (the fee in
    advance) - 5.00 (its unused half, credited) + 10.00 (calls) = 15.00: short by 10.00.
    December, paused throughout, bills no fee and owes no minimum."""
    customer_id = await subscribe(session, "resting", "floor", NOV_1)
    await bill(session, customer_id, NOV_1)
    await send_calls(session, "resting", 100, nov(5))
    await lifecycle(session, customer_id, PAUSE, as_of=nov(16))
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    lines = await all_lines(session, customer_id)
    assert kinds_and_amounts(lines) == [
        ("base_fee", 1000),  # the opening invoice
        ("usage", 1000),
        ("proration", -500),
        ("minimum_spend", 2500 - 1500),
    ]
    await bill(session, customer_id, JAN_1 + timedelta(hours=2))
    assert [line.kind for line in await all_lines(session, customer_id)][4:] == [], "December: nothing owed"


async def test_a_day_based_plan_prorates_its_minimum_in_whole_days(session: AsyncSession, floors_catalog: None) -> None:
    """Daily floor (at least 30.00 a month, day-based) from Nov 1; the customer's own minimum of
    60.00 from Nov 10 at noon. The day of the change counts under the first minimum: 10 days at
    30.00 and 20 at 60.00 of 30 days, 10.00 + 40.00 (exactly, it would be 9.50 + 41.00)."""
    customer_id = await subscribe(session, "daily", "daily-floor", NOV_1)
    await bill(session, customer_id, NOV_1)
    await set_minimum_spend(session, minimum(customer_id, "daily-60", "60.00", nov(10, 12)), as_of=nov(2))
    await session.commit()
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert kinds_and_amounts(await all_lines(session, customer_id)) == [("minimum_spend", 5000)]


async def test_an_immediate_cancel_bills_pending_charges_and_the_minimum_of_its_active_time(
    session: AsyncSession, floors_catalog: None
) -> None:
    """Floor from Nov 1, a setup charge of 25.00 left for the next invoice, canceled on Nov 16.
    The final invoice credits the unused fee (-5.00), owes the minimum of 15 days (25.00) less
    the 5.00 spent (a one-off charge does not count toward it) and bills the setup charge."""
    customer_id = await subscribe(session, "leaves", "floor", NOV_1)
    await bill(session, customer_id, NOV_1)
    pending, _ = await charge_later(session, customer_id, "setup", as_of=nov(3), timing="next_invoice")
    expected = [("proration", -500), ("minimum_spend", 2000), ("one_off", 2500)]

    preview = await lifecycle(session, customer_id, CANCEL, as_of=nov(16), timing="IMMEDIATELY", dry_run=True)
    assert preview.final_invoice is not None
    assert [(line.kind, line.amount("USD")) for line in preview.final_invoice.draft.lines] == expected
    still = await charges_repository.one_off_charge(session, pending)
    assert still is not None and still.status == "pending", "a dry run claims nothing"

    outcome = await lifecycle(session, customer_id, CANCEL, as_of=nov(16), timing="IMMEDIATELY")
    [final] = outcome.issued
    assert kinds_and_amounts(await all_lines(session, customer_id))[1:] == expected
    claimed = await charges_repository.one_off_charge(session, pending)
    assert claimed is not None and (claimed.status, claimed.invoice_id) == ("invoiced", final.id)

    with pytest.raises(TallyError) as refused:
        await charge_later(session, customer_id, "after", as_of=nov(17), timing="next_invoice")
    assert (refused.value.code, refused.value.field) == ("SUBSCRIPTION_CANCELED", "when")
    _, invoice = await charge_later(session, customer_id, "after-now", as_of=nov(17), timing="now")
    assert invoice is not None and (invoice.kind, invoice.total) == ("one_off", 2500), (
        "charging now needs no next invoice"
    )
    with pytest.raises(TallyError) as no_minimum:
        await set_minimum_spend(session, minimum(customer_id, "late-minimum", "10.00", nov(20)), as_of=nov(17))
    assert no_minimum.value.code == "SUBSCRIPTION_CANCELED"
    await session.rollback()


async def test_a_cancel_at_the_period_end_bills_a_later_charge_on_its_final_invoice(
    session: AsyncSession, floors_catalog: None
) -> None:
    """Scheduled on Nov 10 for Dec 1: a charge left for the next invoice on Nov 20 goes on the
    final invoice; a minimum from Dec 1 on is refused; after Dec 1, a charge for later is too."""
    customer_id = await subscribe(session, "winds-down", "floor", NOV_1)
    await bill(session, customer_id, NOV_1)
    await send_calls(session, "winds-down", 600, nov(5))  # 60.00: above the minimum
    await lifecycle(session, customer_id, CANCEL, as_of=nov(10), timing="PERIOD_END")
    with pytest.raises(TallyError) as after_end:
        await set_minimum_spend(session, minimum(customer_id, "too-late", "80.00", DEC_1), as_of=nov(11))
    assert after_end.value.field == "effectiveAt"
    await session.rollback()
    await charge_later(session, customer_id, "setup", as_of=nov(20), timing="next_invoice")
    with pytest.raises(TallyError) as refused:
        await charge_later(session, customer_id, "after", as_of=DEC_1 + timedelta(minutes=5), timing="next_invoice")
    assert refused.value.code == "SUBSCRIPTION_CANCELED"
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    assert kinds_and_amounts(await all_lines(session, customer_id))[1:] == [("usage", 6000), ("one_off", 2500)]


async def test_usage_at_the_customers_own_price_counts_toward_the_minimum_and_draws_the_commitment(
    session: AsyncSession, floors_catalog: None
) -> None:
    """Hundred (100.00 a month, calls at 0.10) at 0.05 a call for this customer, with a minimum of
    120.00 of its own and a commitment of 200.00. November: the fee 100.00 (in advance) and 100
    calls at 0.05 = 5.00 spent, short by 15.00. The commitment pays the opening fee, then 100.00
    of the 120.00 closing November (its 5.00 + 15.00 and December's fee)."""
    customer_id = await subscribe(session, "negotiated", "hundred", NOV_1)
    await change_price_override(
        session,
        PriceOverrideRequest(
            customer_id=customer_id,
            charge=ChargeSelector(meter_key="calls"),
            fields=OverrideFields(unit_price=Decimal("0.05")),
            reason="negotiated",
            idempotency_key="override",
            actor="staff:finance",
            effective_at=NOV_1,
        ),
        as_of=NOV_1,
        window=billing_window(Settings()),
    )
    await set_minimum_spend(session, minimum(customer_id, "own-minimum", "120.00", NOV_1), as_of=NOV_1)
    commitment = CommitmentRequest(
        customer_id=customer_id,
        amount=Decimal("200.00"),
        currency="USD",
        starts_at=NOV_1,
        ends_at=JAN_1,
        idempotency_key="commit",
        actor="staff:finance",
    )
    await create_prepaid_commitment(session, commitment, as_of=NOV_1, backdate_limit=timedelta(days=35))
    await session.commit()
    await bill(session, customer_id, NOV_1)
    await send_calls(session, "negotiated", 100, nov(5))
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    invoices = sorted(await billing.invoices(session, customer_id, limit=10), key=lambda invoice: invoice.number)
    assert [(i.kind, i.total, i.credits_applied, i.amount_due) for i in invoices] == [
        ("commitment", 20000, 0, 20000),
        ("opening", 10000, 10000, 0),
        ("period", 12000, 10000, 2000),
    ]
    november = (await billing.lines_of(session, [invoices[-1].id]))[invoices[-1].id]
    assert [(line.kind, line.amount, line.unit_price) for line in november] == [
        ("usage", 500, Decimal("0.05")),
        ("minimum_spend", 1500, None),
        ("base_fee", 10000, Decimal(100)),
    ]
