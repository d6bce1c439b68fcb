"""Usage charged in advance (seats), billed: a latest meter's value billed at the period's start,
topped up when it rises, never billed again in arrears, keyed once; and the lifecycle around it.
November 2026 has 30 days; amounts are worked out independently below, with fractions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.provenance import explain_line
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from customers.lifecycle import CANCEL, PAUSE, UNPAUSE
from customers.service import NewSubscription, add_subscription
from customers.subscriptions import PlanChangeRequest
from ledger.money import round_to_minor
from ledger.verify import verify
from metering.service import ingest
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import LIMITS, WINDOW, all_lines, bill, lifecycle, subscribe
from tests.conftest import graphql

CATALOG = """
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
base_fee = "20.00"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10.00"
  billed = "in_advance"

[[plans]]
key = "team-min"
name = "Team with a minimum"
currency = "USD"
interval = "month"
base_fee = "20.00"
minimum_spend = "100.00"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10.00"
  billed = "in_advance"

[[plans]]
key = "arrears"
name = "Seats in arrears"
currency = "USD"
interval = "month"
base_fee = "20.00"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10.00"

[[plans]]
key = "team-plus"
name = "Team plus"
currency = "USD"
interval = "month"
base_fee = "20.00"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "15.00"
  billed = "in_advance"

[[plans]]
key = "trial-team"
name = "Trial team"
currency = "USD"
interval = "month"
base_fee = "20.00"
trial_days = 10

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10.00"
  billed = "in_advance"
"""
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
PRICE = Fraction(10)


def nov(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
async def seats_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=NOV_1 - timedelta(days=60))
    await session.commit()


async def seats(session: AsyncSession, external_id: str, count: int, at: datetime) -> None:
    """The product reports the customer's seat count at ``at`` (received a minute later)."""
    item = {
        "id": f"{external_id}-seats-{at.isoformat()}",
        "customer": external_id,
        "type": "seat.count",
        "timestamp": at.isoformat(),
        "properties": {"seats": count},
    }
    result = await ingest(session, [item], received_at=at + timedelta(minutes=1), limits=LIMITS, trace_id=None)
    assert result.accepted == 1, result.rejected
    await session.commit()


def cents(amount: Fraction) -> int:
    """An independent rounding: half away from zero, to the cent."""
    hundredths = amount * 100
    whole = int(abs(hundredths) + Fraction(1, 2))
    return whole if hundredths >= 0 else -whole


def rest_of_november(at: datetime) -> Fraction:
    return Fraction(int((DEC_1 - at).total_seconds()), int((DEC_1 - NOV_1).total_seconds()))


def lines(found: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    """Kinds and amounts of issued lines, or of a draft's (whose amount is rounded on demand)."""
    return [(line.kind, line.amount("USD") if callable(line.amount) else line.amount) for line in found]


async def keyed(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[str, str, str]]:
    rows = await session.execute(
        text(
            "SELECT kind, previous_quantity::text, quantity::text FROM advance_charge_bills "
            "WHERE customer_id = :c ORDER BY period_start, effective_at, kind"
        ),
        {"c": customer_id},
    )
    return [(kind, str(float(previous)), str(float(quantity))) for kind, previous, quantity in rows]


async def test_seats_are_billed_at_the_start_topped_up_when_they_rise_and_not_again_in_arrears(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, seats_catalog: None
) -> None:
    """3 seats at the start: 30.00 in advance on the opening invoice, beside the 20.00 fee. 5 seats on Nov 11 at 08:00,
    4 on Nov 21 (no credit), 6 on Nov 25: the close invoice tops up 2 seats for the rest of the
    period from Nov 11 08:00 and 1 seat from Nov 25 (the fall to 4 billed nothing, so the rise
    to 6 bills 1 above the 5 already billed), and bills December in advance for the 6 seats."""
    customer_id = await subscribe(session, "crew", "team", NOV_1)
    await seats(session, "crew", 3, NOV_1)
    await run_billing(sessions, settings, as_of=NOV_1 + timedelta(minutes=5))
    [fee, opening] = await all_lines(session, customer_id)
    assert (fee.kind, fee.amount) == ("base_fee", 2000)
    assert (opening.kind, opening.quantity, opening.unit_price, opening.amount) == ("advance", 3, 10, 3000)
    assert opening.description == "Seats in advance, 2026-11-01 to 2026-12-01: 3 seat × 10"

    await seats(session, "crew", 5, nov(11, 8))
    await seats(session, "crew", 4, nov(21))
    await seats(session, "crew", 6, nov(25))
    upcoming = await billing.upcoming_invoice(session, customer_id, as_of=nov(26), window=WINDOW)
    assert upcoming is not None
    first_top_up = cents(2 * PRICE * rest_of_november(nov(11, 8)))
    second_top_up = cents(1 * PRICE * rest_of_november(nov(25)))
    expected_close = [
        ("advance_proration", first_top_up),
        ("advance_proration", second_top_up),
        ("base_fee", 2000),
        ("advance", 6000),
    ]
    assert lines(upcoming.draft.lines) == expected_close, "the upcoming invoice shows the top-ups and next advance"

    await run_billing(sessions, settings, as_of=DEC_1 + timedelta(hours=2))
    found = await all_lines(session, customer_id)
    close = found[2:]
    assert lines(close) == expected_close
    assert (first_top_up, second_top_up) == (1311, 200), "2 × 10 × (19 days 16 h / 30 days); 1 × 10 × 6/30"
    assert close[0].quantity == 2 and close[0].unit_price == 10
    assert close[0].description == (
        "Seats rose from 3 to 5 seat on 2026-11-11 08:00 UTC: 2 more × 10 for the rest of the period to "
        "2026-12-01 (65.5556% of the period)"
    )
    assert not [line for line in found if line.kind == "usage"], "never billed again in arrears"
    closing = max(await billing.invoices(session, customer_id, limit=10), key=lambda invoice: invoice.number)
    explained = await explain_line(session, closing, close[0])
    assert explained.plan is not None and explained.plan.share is not None
    assert abs(Fraction(explained.plan.share) - rest_of_november(nov(11, 8))) < Fraction(1, 10**70)
    assert explained.summary == "Team v1, 65.56% of the period"
    assert await keyed(session, customer_id) == [
        ("advance", "0.0", "3.0"),
        ("top_up", "3.0", "5.0"),
        ("top_up", "5.0", "6.0"),
        ("advance", "0.0", "6.0"),
    ]

    # A retried run, then a later run before the next close: nothing is billed twice.
    for as_of in (DEC_1 + timedelta(hours=2), DEC_1 + timedelta(days=3)):
        report = await run_billing(sessions, settings, as_of=as_of)
        assert report.invoices_issued == 0
    assert len(await all_lines(session, customer_id)) == len(found)
    assert len(await keyed(session, customer_id)) == 4
    assert await verify(session) == []


async def test_a_top_up_is_keyed_once_in_the_database(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, seats_catalog: None
) -> None:
    """The key of an amount is (customer, charge, period start, moment, kind): a second copy of a
    top-up is refused by PostgreSQL itself, whatever code would try to write it."""
    customer_id = await subscribe(session, "once", "team", NOV_1)
    await seats(session, "once", 2, NOV_1)
    await seats(session, "once", 4, nov(10))
    await run_billing(sessions, settings, as_of=DEC_1 + timedelta(hours=2))
    with pytest.raises(IntegrityError):
        await session.execute(
            text(
                "INSERT INTO advance_charge_bills SELECT customer_id, plan_charge_id, period_start, effective_at, "
                "kind, plan_version_id, previous_quantity, quantity, share, amount_exact, invoice_id "
                "FROM advance_charge_bills WHERE customer_id = :c AND kind = 'top_up'"
            ),
            {"c": customer_id},
        )
    await session.rollback()


async def test_an_immediate_cancel_credits_the_unused_seats_like_the_base_fee(
    session: AsyncSession, seats_catalog: None
) -> None:
    """3 seats billed in advance (30.00), 5 from Nov 11 (top-up 2 × 10 × 20/30 = 13.33); canceled
    on Nov 16: the final invoice credits the 5 seats' unused 15/30, -25.00, and the fee's, -10.00."""
    customer_id = await subscribe(session, "leaves", "team", NOV_1)
    await seats(session, "leaves", 3, NOV_1)
    await bill(session, customer_id, NOV_1 + timedelta(minutes=5))
    await seats(session, "leaves", 5, nov(11))
    outcome = await lifecycle(session, customer_id, CANCEL, as_of=nov(16), timing="IMMEDIATELY", key="leave")
    [final] = outcome.issued
    found = await all_lines(session, customer_id)
    assert lines(found) == [
        ("base_fee", 2000),
        ("advance", 3000),
        ("proration", -1000),
        ("advance_proration", 1333),
        ("advance_proration", -2500),
    ]
    assert found[-1].description == (
        "Unused Seats billed in advance: 5 seat × 10 from 2026-11-16 00:00 UTC to 2026-12-01 (50% of the period)"
    )
    assert found[-1].quantity == -5
    assert final.total == -1000 + 1333 - 2500
    assert await verify(session) == []


async def test_no_seats_are_billed_while_paused_and_the_rest_is_charged_at_the_unpause(
    session: AsyncSession, seats_catalog: None
) -> None:
    """4 seats billed in advance; paused Nov 16 (credit 4 × 10 × 15/30 = -20.00); 7 seats reported
    while paused (no top-up); unpaused Nov 26: 7 seats for the last 5 days, 7 × 10 × 5/30 = 11.67."""
    customer_id = await subscribe(session, "naps", "team", NOV_1)
    await seats(session, "naps", 4, NOV_1)
    await bill(session, customer_id, NOV_1 + timedelta(minutes=5))
    paused = await lifecycle(session, customer_id, PAUSE, as_of=nov(16), key="nap")
    assert [(p.kind, round_to_minor(p.amount, "USD")) for p in paused.prorations] == [
        ("credit_unused", -1000),
        ("credit_unused", -2000),
    ], "the pause answers the seats' credit beside the fee's (20.00 × 15/30; 4 × 10.00 × 15/30)"
    assert paused.prorations[1].description.startswith("Unused Seats billed in advance: 4 seat × 10 from 2026-11-16")
    await seats(session, "naps", 7, nov(20))
    await lifecycle(session, customer_id, UNPAUSE, as_of=nov(26), key="wake")
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    found = await all_lines(session, customer_id)
    advance = [(line.kind, line.quantity, line.amount) for line in found if line.kind.startswith("advance")]
    assert advance == [
        ("advance", 4, 4000),
        ("advance_proration", -4, -2000),
        ("advance_proration", 7, cents(7 * PRICE * Fraction(5, 30))),
        ("advance", 7, 7000),
    ]
    assert await verify(session) == []


async def test_a_trial_bills_no_seats_and_its_end_bills_the_first_paid_period_in_advance(
    session: AsyncSession, seats_catalog: None
) -> None:
    """A 10-day trial from Nov 1 (no fee, no seats in advance, no top-ups); the invoice closing it
    bills the first paid period (Nov 11 to Dec 11) in advance for the seats then: 8 × 10."""
    customer_id = await subscribe(session, "tries", "trial-team", NOV_1)
    await seats(session, "tries", 2, NOV_1)
    await seats(session, "tries", 8, nov(5))
    await bill(session, customer_id, nov(11, 2))
    found = await all_lines(session, customer_id)
    assert [(line.kind, line.quantity, line.amount) for line in found] == [
        ("base_fee", 1, 2000),
        ("advance", 8, 8000),
    ]
    assert found[-1].description.startswith("Seats in advance, 2026-11-11 to 2026-12-11: 8 seat")


async def test_simulation_rates_seats_in_advance_as_invoices_bill_them(
    session: AsyncSession, seats_catalog: None
) -> None:
    """November: 3 seats at the start, 5 from Nov 16 (halfway). Now: 20.00 + 3 × 10.00 + 2 × 10.00
    × 15/30 = 60.00; under a draft at 12.00 a seat: 20.00 + 36.00 + 12.00 = 68.00."""
    await subscribe(session, "sim", "team", NOV_1)
    await seats(session, "sim", 3, NOV_1)
    await seats(session, "sim", 5, nov(16))
    draft = CATALOG.replace(
        'unit_price = "10.00"\n  billed = "in_advance"\n\n[[plans]]',
        'unit_price = "12.00"\n  billed = "in_advance"\n\n[[plans]]',
        1,
    )
    assert draft != CATALOG
    summary = await simulate_pricing(
        session,
        catalog_text=draft,
        selection=PeriodSelection(start=NOV_1 - timedelta(days=1), end=DEC_1),
        as_of=DEC_1 + timedelta(days=1),
    )
    [outcome] = summary.outcomes
    assert (outcome.periods, outcome.current, outcome.simulated) == (1, 6000, 6800)


async def test_the_api_shows_the_charge_billed_in_advance_and_the_upcoming_top_up(
    client: httpx.AsyncClient,
    session: AsyncSession,
    seats_catalog: None,
    token_for,  # type: ignore[no-untyped-def]
) -> None:
    """Through GraphQL: the plan's charge says IN_ADVANCE; the upcoming invoice of a customer whose
    seats rose shows the top-up as a line with its quantity, unit price and share."""
    now = datetime.now(UTC)
    started = now - timedelta(days=5)
    customer_id = await subscribe(session, "live", "team", started)
    await seats(session, "live", 2, started)
    await bill(session, customer_id, started + timedelta(minutes=5))
    await seats(session, "live", 4, now - timedelta(days=1))
    admin = await token_for("admin")
    query = """query($id: ID!) {
      plans { key charges { billed summary } }
      customer(id: $id) { upcomingInvoice { lines { kind description quantity unitPrice amount { amount } } } }
    }"""
    body = (await graphql(client, admin, query, {"id": str(customer_id)})).json()
    assert "errors" not in body, body
    team = next(plan for plan in body["data"]["plans"] if plan["key"] == "team")
    assert [charge["billed"] for charge in team["charges"]] == ["IN_ADVANCE"]
    assert team["charges"][0]["summary"].endswith("billed in advance for the value at the period's start")
    lines = body["data"]["customer"]["upcomingInvoice"]["lines"]
    [top_up] = [line for line in lines if line["kind"] == "ADVANCE_PRORATION"]
    assert (top_up["quantity"], top_up["unitPrice"]) == ("2", "10")
    assert top_up["description"].startswith("Seats rose from 2 to 4 seat on ")
    assert "% of the period)" in top_up["description"]
    [next_period] = [line for line in lines if line["kind"] == "ADVANCE"]
    assert (next_period["quantity"], next_period["amount"]["amount"]) == ("4", "40.00")


async def test_a_plan_change_credits_the_seats_billed_on_the_old_price_and_charges_the_new_one(
    session: AsyncSession, seats_catalog: None
) -> None:
    """4 seats at 10.00 billed in advance; moved on Nov 16 to 15.00 a seat (the fees are equal):
    the unused half of the 40.00 is credited, -20.00, and the rest charged at the new price, 4 ×
    15.00 × 15/30 = 30.00, as the base fee's prorations do; December is billed at 15.00 a seat."""
    customer_id = await subscribe(session, "grows", "team", NOV_1)
    await seats(session, "grows", 4, NOV_1)
    await bill(session, customer_id, NOV_1 + timedelta(minutes=5))
    request = PlanChangeRequest(customer_id, "team-plus", "IMMEDIATELY", "grow", actor="test", at=nov(16))
    outcome = await change_plan(session, request, as_of=nov(16))
    assert [round_to_minor(p.amount, "USD") for p in outcome.prorations] == [-1000, 1000, -2000, 3000]
    await session.commit()
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    advance = [(line.kind, line.quantity, line.amount) for line in await all_lines(session, customer_id)]
    assert [line for line in advance if line[0].startswith("advance")] == [
        ("advance", 4, 4000),
        ("advance_proration", -4, -2000),
        ("advance_proration", 4, 3000),
        ("advance", 4, 6000),
    ]
    assert await verify(session) == []


async def test_charges_in_arrears_are_rated_as_before_and_read_nothing_of_advance_bills(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    seats_catalog: None,
    sent_statements: list[str],
) -> None:
    """The same seats meter billed in arrears: the period's latest value, 6, at its close (60.00),
    nothing in advance; and billing that customer reads and writes no advance bill at all."""
    customer_id = await subscribe(session, "later", "arrears", NOV_1)
    await seats(session, "later", 3, NOV_1)
    await seats(session, "later", 6, nov(20))
    sent_statements.clear()
    await run_billing(sessions, settings, as_of=DEC_1 + timedelta(hours=2))
    assert [(line.kind, line.quantity, line.amount) for line in await all_lines(session, customer_id)] == [
        ("base_fee", 1, 2000),
        ("usage", 6, 6000),
        ("base_fee", 1, 2000),
    ]
    assert not [statement for statement in sent_statements if "advance_charge_bills" in statement]


async def test_seats_billed_in_advance_count_toward_the_minimum_spend(
    session: AsyncSession, seats_catalog: None
) -> None:
    """A 100.00 minimum: the 20.00 fee, 3 seats in advance (30.00) and a top-up of 2 seats for
    half of November (10.00) count, so the close invoice makes up 40.00, not 80.00."""
    customer_id = await subscribe(session, "small", "team-min", NOV_1)
    await seats(session, "small", 3, NOV_1)
    await bill(session, customer_id, NOV_1 + timedelta(minutes=5))
    await seats(session, "small", 5, nov(16))
    await bill(session, customer_id, DEC_1 + timedelta(hours=2))
    found = [(line.kind, line.amount) for line in await all_lines(session, customer_id)]
    assert ("minimum_spend", 4000) in found
    assert found[2:] == [("advance_proration", 1000), ("minimum_spend", 4000), ("base_fee", 2000), ("advance", 5000)]


FLOOR_ADD_ON = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"

[[plans]]
key = "floor-addon"
name = "Calls with a floor"
currency = "USD"
interval = "month"
base_fee = "0"
minimum_spend = "50.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.10"
"""


async def test_an_add_ons_minimum_spend_counts_its_own_seats_only(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, seats_catalog: None
) -> None:
    """Team (20.00 and 3 seats at 10.00 in advance) and an add-on with a 50.00 floor and no usage,
    both from Nov 1: the add-on owes its whole floor, whatever the other subscription billed."""
    await apply_catalog(session, FLOOR_ADD_ON, as_of=NOV_1 - timedelta(days=30))
    await session.commit()
    customer_id = await subscribe(session, "both", "team", NOV_1)
    await seats(session, "both", 3, NOV_1 - timedelta(hours=1))
    add_on = NewSubscription(customer_id, "floor-addon", "floor-addon-both", started_at=NOV_1)
    add_on_id = (await add_subscription(session, add_on, as_of=NOV_1)).id
    await session.commit()
    await run_billing(sessions, settings, as_of=DEC_1 + timedelta(hours=2))
    by_subscription: dict[uuid.UUID | None, list[tuple[str, int]]] = {}
    for invoice in sorted(await billing.invoices(session, customer_id, limit=100), key=lambda i: i.number):
        lines = (await billing.lines_of(session, [invoice.id]))[invoice.id]
        by_subscription.setdefault(invoice.subscription_id, []).extend((line.kind, line.amount) for line in lines)
    assert by_subscription.pop(add_on_id) == [("minimum_spend", 5000)]
    [team_lines] = by_subscription.values()
    assert team_lines == [("base_fee", 2000), ("advance", 3000), ("base_fee", 2000), ("advance", 3000)]
