"""The billing calendar and trials, billed: calendar-aligned stubs (Lago's published examples),
a trial to its first paid period (usage free or charged), a trial ended early and one extended,
the payment-method requirement both ways, a change of interval month → year worked out by hand,
and bad input refused with nothing written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.collection import stripe_gateway
from app.jobs import process_stripe_events
from app.settings import Settings
from billing.collection.customers import stripe_customer_id
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.service import BillingWindow
from billing.subscriptions.trials import TrialOutcome, change_trial_billed
from customers.errors import InvalidInput
from customers.lifecycle import CANCEL, subscription_events
from customers.service import NewCustomer, create_customer, subscriptions_of
from customers.subscriptions import PlanChangeRequest
from customers.trials import TrialChangeRequest
from ledger.errors import IdempotencyKeyReused, TallyError
from metering import entitlements
from metering import usage as usage_service
from pricing.catalog import parse_catalog
from pricing.errors import CatalogInvalid
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import lifecycle
from tests.billing.scenario import LIMITS, invoices_of, lines_of
from tests.billing.stripe_support import CARD_SUCCEEDS, LocalStripe, card_for
from tests.billing.test_stripe_events import deliver, stripe_object

WINDOW = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))
METER = """
[[meters]]
key = "calls"
name = "API calls"
unit = "call"
event_type = "api.call"
aggregation = "count"
"""


def plan(key: str, fee: str, interval: str = "month", charge: bool = False, **settings: Any) -> str:
    lines = [f'[[plans]]\nkey = "{key}"\nname = "{key.title()}"\ncurrency = "USD"']
    lines.append(f'interval = "{interval}"\nbase_fee = "{fee}"')
    lines += [f"{name} = {value!r}".replace("'", '"').replace("True", "true") for name, value in settings.items()]
    if charge:
        lines.append(
            '  [[plans.charges]]\n  meter = "calls"\n  model = "per_unit"\n  unit_price = "0.10"\n  limit = 1000'
        )
    return "\n".join(lines) + "\n"


CATALOG = "\n".join(
    [
        METER,
        plan("lago", "50.00", billing_anchor="calendar"),
        plan("lagotrial", "50.00", billing_anchor="calendar", trial_days=5),
        plan("trialfree", "30.00", charge=True, trial_days=14),
        plan("trialcharged", "30.00", charge=True, trial_days=14, trial_usage="charged"),
        plan("needscard", "20.00", charge=True, trial_days=7, trial_requires_payment_method=True),
        plan("monthly", "10.00", charge=True),
        plan("yearly", "120.00", "year", charge=True),
    ]
)


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


@pytest.fixture
async def calendar_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=at("2025-01-01T00:00:00"))
    await session.commit()


async def subscribe(
    session: AsyncSession, external_id: str, plan_key: str, started_at: datetime, **extra: Any
) -> uuid.UUID:
    new = NewCustomer(
        external_id=external_id, name=external_id, currency="USD", plan_key=plan_key, started_at=started_at, **extra
    )
    customer = await create_customer(session, new, as_of=started_at)
    await session.commit()
    return customer.id


async def bill(session: AsyncSession, customer_id: uuid.UUID, as_of: datetime, window: BillingWindow = WINDOW) -> None:
    while await billing.issue_next_invoice(session, customer_id, as_of=as_of, window=window) is not None:
        await session.commit()
    await session.commit()


async def all_lines(session: AsyncSession, customer_id: uuid.UUID) -> list[list[tuple[str, str, Any, int]]]:
    return [await lines_of(session, invoice.id) for invoice in await invoices_of(session, customer_id)]


async def send_calls(session: AsyncSession, external_id: str, count: int, moment: datetime) -> None:
    from metering.service import ingest

    items = [
        {
            "id": f"{external_id}-{moment.isoformat()}-{i}",
            "customer": external_id,
            "type": "api.call",
            "timestamp": moment.isoformat(),
            "properties": {},
        }
        for i in range(count)
    ]
    result = await ingest(session, items, received_at=moment + timedelta(minutes=1), limits=LIMITS, trace_id=None)
    assert result.accepted == count
    await session.commit()


async def test_a_calendar_plan_started_mid_month_bills_a_prorated_stub_then_whole_months(
    session: AsyncSession, calendar_catalog: None
) -> None:
    """Lago's calendar billing: "Your customer signs up for the Premium plan, $50 monthly, on August
    10th. There are 22 days left until the end of the month, including August 10th. Therefore, the
    subscription fee for August is: 22 days x $50 / 31 days = $35.48"
    (https://docs.getlago.com/guide/subscriptions/assign-plan, "Calendar billing period"). Issue 15's
    reference, 38.71, is the same rule for a start on the 8th of a 31-day month: 24 × 50 / 31
    (I found that figure in neither Lago's docs nor getlago/lago-api's specs). Exact to the second,
    a start at midnight is the same share as Lago's whole days."""
    august = await subscribe(session, "lago-aug", "lago", at("2026-08-10T00:00:00"))
    march = await subscribe(session, "lago-mar", "lago", at("2026-03-08T00:00:00"))
    await bill(session, august, at("2026-09-01T02:00:00"))
    await bill(session, march, at("2026-04-01T02:00:00"))
    assert await all_lines(session, august) == [
        [
            (
                "base_fee",
                "Lago v1 base fee, 2026-08-10 to 2026-09-01 (prorated: part of 2026-08-01 to 2026-09-01)",
                Decimal("0.709677419355"),
                3548,
            )
        ],
        [("base_fee", "Lago v1 base fee, 2026-09-01 to 2026-10-01", 1, 5000)],
    ]
    [opening, april] = await all_lines(session, march)
    assert [amount for *_, amount in opening] == [3871]
    assert april == [("base_fee", "Lago v1 base fee, 2026-04-01 to 2026-05-01", 1, 5000)]


async def test_a_trial_on_a_calendar_plan_bills_the_stub_after_it(
    session: AsyncSession, calendar_catalog: None
) -> None:
    """Lago's trial example: "You create a monthly plan of $50 that needs to be paid in advance, with
    a trial period of 5 days. If the customer's subscription starts on April 1st, then Lago will
    [...] issue an invoice for the period April 6th to April 30th [...] $50 x 25 days due / 30 days
    in April = $41.67" (https://doc.getlago.com/docs/guide/plans/plan-model, "Trial period").
    Nothing is billed for the trial; the stub's fee is billed when the trial closes."""
    customer_id = await subscribe(session, "lago-trial", "lagotrial", at("2026-04-01T00:00:00"))
    await bill(session, customer_id, at("2026-04-05T00:00:00"))
    await bill(session, customer_id, at("2026-05-01T02:00:00"))
    invoices = await invoices_of(session, customer_id)
    assert [(i.kind, i.period_start, i.period_end, i.total) for i in invoices] == [
        ("opening", at("2026-04-01T00:00:00"), at("2026-04-06T00:00:00"), 0),
        ("period", at("2026-04-01T00:00:00"), at("2026-04-06T00:00:00"), 4167),
        ("period", at("2026-04-06T00:00:00"), at("2026-05-01T00:00:00"), 5000),
    ]


@pytest.mark.parametrize(("plan_key", "trial_usage_cents"), [("trialfree", None), ("trialcharged", 300)])
async def test_a_trial_then_its_first_paid_periods(
    session: AsyncSession, calendar_catalog: None, plan_key: str, trial_usage_cents: int | None
) -> None:
    """14 days of trial from Jan 10 (no fee; 30 calls, free or 0.10 each as the plan says), then
    anniversary periods from the trial's end, Jan 24: 30.00 in advance, usage in arrears.
    Entitlements count the trial as its own period."""
    external_id = f"t-{plan_key}"
    customer_id = await subscribe(session, external_id, plan_key, at("2026-01-10T00:00:00"))
    await bill(session, customer_id, at("2026-01-10T00:00:00"))
    await send_calls(session, external_id, 30, at("2026-01-12T00:00:00"))
    entitlement = await entitlements.entitlement(
        session, customer_id, "calls", suspended=False, as_of=at("2026-01-13T00:00:00")
    )
    assert entitlement is not None and entitlement.allowed and entitlement.used == 30
    period, _ = await usage_service.current_period(session, customer_id, at("2026-01-13T00:00:00"))
    assert (period.start, period.end) == (at("2026-01-10T00:00:00"), at("2026-01-24T00:00:00"))
    await bill(session, customer_id, at("2026-01-24T00:30:00"))  # in the grace hour: nothing yet
    assert len(await invoices_of(session, customer_id)) == 1
    await send_calls(session, external_id, 5, at("2026-02-01T00:00:00"))
    await bill(session, customer_id, at("2026-02-24T01:00:00"))
    trial_usage = [("usage", "API calls", Decimal(30), trial_usage_cents)] if trial_usage_cents else []
    assert await all_lines(session, customer_id) == [
        [],
        [*trial_usage, ("base_fee", f"{plan_key.title()} v1 base fee, 2026-01-24 to 2026-02-24", 1, 3000)],
        [
            ("usage", "API calls", Decimal(5), 50),
            ("base_fee", f"{plan_key.title()} v1 base fee, 2026-02-24 to 2026-03-24", 1, 3000),
        ],
    ]


async def change_trial(
    session: AsyncSession, customer_id: uuid.UUID, kind: str, moment: datetime | None, as_of: datetime, key: str
) -> TrialOutcome:
    request = TrialChangeRequest(customer_id, kind, key, actor="test", at=moment)
    try:
        return await change_trial_billed(session, request, as_of=as_of, window=WINDOW)
    except TallyError:
        await session.rollback()
        raise
    finally:
        await session.commit()


async def test_a_trial_ended_early_bills_at_once_and_moves_the_anniversary(
    session: AsyncSession, calendar_catalog: None
) -> None:
    customer_id = await subscribe(session, "early", "trialfree", at("2026-01-10T00:00:00"))
    await bill(session, customer_id, at("2026-01-10T00:00:00"))
    now = at("2026-01-15T12:00:00")
    outcome = await change_trial(session, customer_id, "end", None, now, "end-1")
    assert [(i.period_start, i.period_end, i.total) for i in outcome.invoices] == [
        (at("2026-01-10T00:00:00"), now, 3000)
    ]
    again = await change_trial(session, customer_id, "end", None, now, "end-1")  # a retry
    assert [i.id for i in again.invoices] == [i.id for i in outcome.invoices]
    [subscription] = (await subscriptions_of(session, [customer_id])).values()
    assert (subscription.trial_ends_at, subscription.billing_anchor) == (now, now)
    await bill(session, customer_id, at("2026-02-15T13:00:00"))
    assert [line for lines in await all_lines(session, customer_id) for line in lines] == [
        ("base_fee", "Trialfree v1 base fee, 2026-01-15 to 2026-02-15", 1, 3000),
        ("base_fee", "Trialfree v1 base fee, 2026-02-15 to 2026-03-15", 1, 3000),
    ]
    with pytest.raises(InvalidInput) as ended:
        await change_trial(session, customer_id, "end", None, now + timedelta(days=1), "end-2")
    assert (ended.value.code, ended.value.field) == ("TRIAL_ENDED", "customerId")
    with pytest.raises(InvalidInput) as extended:
        await change_trial(session, customer_id, "extend", at("2026-03-01T00:00:00"), now, "extend-late")
    assert (extended.value.code, extended.value.field) == ("TRIAL_ENDED", "customerId")
    with pytest.raises(IdempotencyKeyReused):
        await change_trial(session, customer_id, "end", now - timedelta(hours=1), now, "end-1")


async def test_a_trial_extended_bills_nothing_until_its_new_end(session: AsyncSession, calendar_catalog: None) -> None:
    customer_id = await subscribe(session, "later", "trialfree", at("2026-01-10T00:00:00"))
    await bill(session, customer_id, at("2026-01-10T00:00:00"))
    as_of = at("2026-01-20T00:00:00")
    refusals = [
        ("extend", at("2026-01-23T00:00:00"), "until"),  # before the current end
        ("extend", at("2027-01-20T00:00:00"), "until"),  # past 365 days from the start
        ("end", at("2026-01-25T00:00:00"), "at"),  # after the trial's end
        ("end", at("2026-01-09T00:00:00"), "at"),  # before the subscription
    ]
    for kind, moment, field in refusals:
        with pytest.raises(InvalidInput) as refused:
            await change_trial(session, customer_id, kind, moment, as_of, f"{kind}-{moment}")
        assert refused.value.field == field
    assert (await session.execute(text("SELECT count(*) FROM trial_changes"))).scalar_one() == 0
    await change_trial(session, customer_id, "extend", at("2026-02-01T00:00:00"), as_of, "extend")
    await bill(session, customer_id, at("2026-01-31T00:00:00"))
    assert len(await invoices_of(session, customer_id)) == 1
    await bill(session, customer_id, at("2026-02-01T01:00:00"))
    assert (await all_lines(session, customer_id))[-1] == [
        ("base_fee", "Trialfree v1 base fee, 2026-02-01 to 2026-03-01", 1, 3000)
    ]


async def test_a_trial_keeps_its_end_once_a_cancel_is_scheduled_or_done(
    session: AsyncSession, calendar_catalog: None
) -> None:
    """A cancel at the period's end was made for the trial's end as it was: moving the end would
    leave the cancel inside a paid period, or revive a subscription that has ended."""
    leaving = await subscribe(session, "leaving", "trialfree", at("2026-01-10T00:00:00"))
    await lifecycle(session, leaving, CANCEL, as_of=at("2026-01-12T00:00:00"), timing="PERIOD_END")
    gone = await subscribe(session, "gone", "trialfree", at("2026-01-10T00:00:00"))
    await lifecycle(session, gone, CANCEL, as_of=at("2026-01-12T00:00:00"), timing="IMMEDIATELY")
    as_of = at("2026-01-15T00:00:00")
    refusals = [
        (leaving, "extend", at("2026-02-01T00:00:00"), "CANCEL_SCHEDULED"),
        (leaving, "end", None, "CANCEL_SCHEDULED"),
        (gone, "extend", at("2026-02-01T00:00:00"), "SUBSCRIPTION_CANCELED"),
        (gone, "end", None, "SUBSCRIPTION_CANCELED"),
    ]
    for customer_id, kind, moment, code in refusals:
        with pytest.raises(InvalidInput) as refused:
            await change_trial(session, customer_id, kind, moment, as_of, f"{customer_id}-{kind}")
        assert (refused.value.code, refused.value.field) == (code, "customerId")
    assert (await session.execute(text("SELECT count(*) FROM trial_changes"))).scalar_one() == 0
    [subscription] = (await subscriptions_of(session, [leaving])).values()
    assert subscription.trial_ends_at == subscription.cancel_at == at("2026-01-24T00:00:00")


async def test_calendar_and_trial_input_is_refused_naming_the_field(
    session: AsyncSession, calendar_catalog: None
) -> None:
    cases = [
        ({"billing_anchor_day": 0}, "monthly", "billingAnchorDay"),
        ({"billing_anchor_day": 32}, "monthly", "billingAnchorDay"),
        ({"billing_anchor_day": 8}, None, "billingAnchorDay"),  # no plan
        ({"trial_days": -1}, "monthly", "trialDays"),
        ({"trial_days": 366}, "monthly", "trialDays"),
    ]
    for extra, plan_key, field in cases:
        new = NewCustomer(external_id="bad", name="Bad", currency="USD", plan_key=plan_key, **extra)
        with pytest.raises(InvalidInput) as refused:
            await create_customer(session, new, as_of=at("2026-01-01T00:00:00"))
        assert refused.value.field == field
        await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM customers"))).scalar_one() == 0
    # Day 31 is accepted and clamped: the last day of each month.
    customer_id = await subscribe(session, "last", "monthly", at("2026-02-10T00:00:00"), billing_anchor_day=31)
    await bill(session, customer_id, at("2026-03-31T02:00:00"))
    assert [i.period_end for i in await invoices_of(session, customer_id)] == [
        at("2026-02-28T00:00:00"),
        at("2026-02-28T00:00:00"),
        at("2026-03-31T00:00:00"),
    ]
    bad = METER + plan("odd", "1.00", "fortnight", trial_days=-1, trial_usage="maybe", billing_anchor="sometimes")
    with pytest.raises(CatalogInvalid) as invalid:
        parse_catalog(bad)
    assert {p.path for p in invalid.value.problems} == {
        "plans[0].interval",
        "plans[0].trial_days",
        "plans[0].trial_usage",
        "plans[0].billing_anchor",
    }


async def test_a_trial_that_requires_a_payment_method_ends_with_the_subscription_without_one(
    session: AsyncSession, calendar_catalog: None
) -> None:
    """TALLY_TRIAL_WITHOUT_PAYMENT_METHOD=cancel (the default): the trial's invoice bills no paid
    period, nothing is billed after it, entitlements answer no. With past_due, the first period is
    billed and the customer is PAST_DUE."""
    canceled = await subscribe(session, "nocard", "needscard", at("2026-01-01T00:00:00"))
    past_due = await subscribe(session, "nocard-pd", "needscard", at("2026-01-01T00:00:00"))
    await send_calls(session, "nocard", 3, at("2026-01-02T00:00:00"))
    await bill(session, canceled, at("2026-03-01T00:00:00"))
    await bill(session, past_due, at("2026-01-08T01:00:00"), replace_window(trial_without_payment_method="past_due"))
    assert [(i.kind, i.period_end, i.total) for i in await invoices_of(session, canceled)] == [
        ("opening", at("2026-01-08T00:00:00"), 0),
        ("period", at("2026-01-08T00:00:00"), 0),
    ]
    [subscription] = (await subscriptions_of(session, [canceled])).values()
    assert subscription.cancel_at == at("2026-01-08T00:00:00")
    assert subscription.cancel_reason == "the trial ended without a payment method on file"
    [canceled_event] = await subscription_events(session, canceled)
    assert (canceled_event.kind, canceled_event.effective_at, canceled_event.actor) == (
        "CANCEL",
        at("2026-01-08T00:00:00"),
        "tally",
    )
    entitlement = await entitlements.entitlement(
        session, canceled, "calls", suspended=False, as_of=at("2026-01-09T00:00:00")
    )
    assert entitlement is not None and not entitlement.allowed
    assert [i.total for i in await invoices_of(session, past_due)] == [0, 2000]
    status = await session.execute(text("SELECT status FROM customers WHERE id = :id"), {"id": past_due})
    assert status.scalar_one() == "PAST_DUE"


def replace_window(**changes: Any) -> BillingWindow:
    from dataclasses import replace

    return replace(WINDOW, **changes)


async def test_a_trial_that_requires_a_payment_method_bills_on_when_a_card_is_on_file(
    session: AsyncSession, settings: Settings, localstripe: LocalStripe, stripe_app: httpx.AsyncClient, sessions: Any
) -> None:
    """The card is saved as the frontend would with a SetupIntent (attached, made the default in
    Stripe), and Tally learns of it from Stripe's customer.updated event, as collection does."""
    await apply_catalog(session, CATALOG, as_of=at("2025-01-01T00:00:00"))
    await session.commit()
    customer_id = await subscribe(session, "card", "needscard", at("2026-01-01T00:00:00"))
    configured = localstripe.settings(settings)
    gateway = stripe_gateway(configured)
    assert gateway is not None
    stripe_customer = await stripe_customer_id(session, gateway, customer_id, as_of=at("2026-01-01T00:00:00"))
    await session.commit()
    card_for(localstripe, stripe_customer, CARD_SUCCEEDS)
    await deliver(
        stripe_app, "customer.updated", stripe_object(localstripe.client().v1.customers.retrieve(stripe_customer))
    )
    await process_stripe_events(sessions, configured, as_of=at("2026-01-02T00:00:00"))
    await bill(session, customer_id, at("2026-02-08T01:00:00"))
    assert [i.total for i in await invoices_of(session, customer_id)] == [0, 2000, 2000]
    [subscription] = (await subscriptions_of(session, [customer_id])).values()
    assert subscription.cancel_at is None


async def test_a_change_from_monthly_to_yearly_cuts_the_month_and_bills_the_year_in_advance(
    session: AsyncSession, calendar_catalog: None
) -> None:
    """On Monthly (10.00) from Jan 1; on Jan 11 00:00 to Yearly (120.00). By hand: January's
    unused 21 of 31 days are credited, 10 × 21/31 = 6.774… → -6.77; the year from Jan 11 is billed
    in advance, 120.00; January's usage (40 calls × 0.10 = 4.00) is rated on the invoice that
    closes the cut-short period [Jan 1, Jan 11), issued at the change. The next invoice is a year
    later."""
    customer_id = await subscribe(session, "upgrade", "monthly", at("2026-01-01T00:00:00"))
    await bill(session, customer_id, at("2026-01-01T00:00:00"))
    await send_calls(session, "upgrade", 40, at("2026-01-05T00:00:00"))
    change_at = at("2026-01-11T00:00:00")
    request = PlanChangeRequest(customer_id, "yearly", "IMMEDIATELY", "to-yearly", actor="test", at=change_at)
    preview = await change_plan(session, request, as_of=change_at, dry_run=True)
    await session.rollback()
    outcome = await change_plan(session, request, as_of=change_at)
    issued = await billing.issue_due_now(session, customer_id, as_of=change_at, window=WINDOW)
    await session.commit()
    expected = [Decimal(-10) * 21 / 31, Decimal(120)]
    assert [p.amount for p in preview.prorations] == [p.amount for p in outcome.prorations] == expected
    assert [(i.period_start, i.period_end) for i in issued] == [(at("2026-01-01T00:00:00"), change_at)]
    assert (await all_lines(session, customer_id))[1] == [
        ("usage", "API calls", Decimal(40), 400),
        ("proration", "Unused time on Monthly v1 (2026-01-11 00:00 UTC to 2026-02-01 00:00 UTC)", None, -677),
        ("base_fee", "Yearly v1 base fee, 2026-01-11 to 2027-01-11", 1, 12000),
    ]
    await bill(session, customer_id, at("2027-01-11T00:30:00"))
    assert len(await invoices_of(session, customer_id)) == 2
    await bill(session, customer_id, at("2027-01-11T01:00:00"))
    assert (await all_lines(session, customer_id))[-1] == [
        ("base_fee", "Yearly v1 base fee, 2027-01-11 to 2028-01-11", 1, 12000)
    ]
