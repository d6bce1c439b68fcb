"""Several subscriptions per customer against the real database: a base plan and an add-on on
another meter, each billed on its own calendar by the billing run, each invoice equal to the one a
customer with only that subscription gets for the same usage; the same meter twice refused with
nothing written; a cancel of the add-on that leaves the base plan billing; requests that must say
which subscription; entitlements answered by the subscription that charges the meter. Every test
ends with the ledger invariants checked (conftest)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices import service as billing
from billing.invoices.one_off import OneOffChargeRequest, create_one_off_charge
from billing.subscriptions.lifecycle import change_lifecycle
from customers.errors import InvalidInput
from customers.lifecycle import CANCEL, LifecycleRequest
from customers.service import (
    NewCustomer,
    NewSubscription,
    add_subscription,
    all_subscriptions_of,
    create_customer,
    subscriptions_of,
)
from customers.subscriptions import PlanChangeRequest, change_plan
from ledger.errors import IdempotencyKeyReused
from metering.entitlements import entitlement, entitlement_by_external_id
from metering.service import ingest
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, FEB_28, JAN_31, LIMITS, MAR_31, invoices_of, send_calls, subscribe
from tests.conftest import STORAGE_ADD_ON, graphql, now

ADD_ONS = (
    STORAGE_ADD_ON
    + """
[[plans]]
key = "calls-addon"
name = "Calls add-on"
currency = "USD"
interval = "month"
base_fee = "5.00"

  [[plans.charges]]
  meter = "calls"
  model = "per_unit"
  unit_price = "0.01"
"""
)
FEB_10 = datetime(2026, 2, 10, tzinfo=UTC)
MAR_10 = datetime(2026, 3, 10, tzinfo=UTC)
GRACE = timedelta(hours=1)


@pytest.fixture
async def add_on_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=30))
    await apply_catalog(session, ADD_ONS, as_of=JAN_31 - timedelta(days=30))
    await session.commit()


async def add(
    session: AsyncSession, customer_id: uuid.UUID, plan: str, started_at: datetime, key: str | None = None
) -> uuid.UUID:
    new = NewSubscription(customer_id, plan, key or f"add-{plan}-{customer_id}", started_at=started_at)
    subscription = await add_subscription(session, new, as_of=started_at)
    await session.commit()
    return subscription.id


async def send_storage(session: AsyncSession, external_id: str, count: int, at: datetime) -> None:
    items = [
        {"id": f"{external_id}-gb-{at.isoformat()}-{i}", "customer": external_id, "type": "storage.used",
         "timestamp": at.isoformat(), "properties": {}}
        for i in range(count)
    ]  # fmt: skip
    result = await ingest(session, items, received_at=at + timedelta(minutes=1), limits=LIMITS, trace_id=None)
    assert result.accepted == count
    await session.commit()


async def lines(session: AsyncSession, invoice: Any) -> list[tuple[str, Any, int]]:
    found = (await billing.lines_of(session, [invoice.id]))[invoice.id]
    return [(line.kind, line.quantity, line.amount) for line in found]


async def counts(session: AsyncSession) -> tuple[int, ...]:
    row = (
        await session.execute(
            text(
                "SELECT (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM subscription_phases), "
                "(SELECT count(*) FROM plan_changes), (SELECT count(*) FROM subscription_events), "
                "(SELECT count(*) FROM invoices), (SELECT count(*) FROM ledger_transactions)"
            )
        )
    ).one()
    return tuple(row)


async def test_a_base_plan_and_an_add_on_are_each_billed_on_their_own_calendar_as_if_alone(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, add_on_catalog: None
) -> None:
    """Acme has Basic from Jan 31 and the storage add-on from Feb 10; the twins have one each,
    with the same usage. Every invoice of Acme's equals its twin's, line for line."""
    acme = await subscribe(session, "acme", "basic", JAN_31)
    base_twin = await subscribe(session, "base-twin", "basic", JAN_31)
    add_on = await add(session, acme, "storage-addon", FEB_10)
    add_on_twin = (
        await create_customer(
            session,
            NewCustomer("add-on-twin", "add-on-twin", "USD", plan_key="storage-addon", started_at=FEB_10),
            as_of=FEB_10,
        )
    ).id
    await session.commit()
    for external_id in ("acme", "base-twin"):
        await send_calls(session, external_id, 150, datetime(2026, 2, 12, tzinfo=UTC))
    for external_id in ("acme", "add-on-twin"):
        await send_storage(session, external_id, 30, datetime(2026, 2, 15, tzinfo=UTC))

    for as_of in (JAN_31, FEB_10, FEB_28 + GRACE, MAR_10 + GRACE):
        await run_billing(sessions, settings, as_of=as_of + timedelta(seconds=1))
    # Each subscription closes its own period: Basic Jan 31 - Feb 28, the add-on Feb 10 - Mar 10.
    acme_invoices = await invoices_of(session, acme)
    by_subscription: dict[uuid.UUID | None, list[Any]] = {}
    for invoice in acme_invoices:
        by_subscription.setdefault(invoice.subscription_id, []).append(invoice)
    [base] = [s for s in (await all_subscriptions_of(session, [acme]))[acme] if s.id != add_on]
    assert [(i.kind, i.period_start, i.period_end) for i in by_subscription[base.id]] == [
        ("opening", JAN_31, FEB_28),
        ("period", JAN_31, FEB_28),
    ]
    assert [(i.kind, i.period_start, i.period_end) for i in by_subscription[add_on]] == [
        ("opening", FEB_10, MAR_10),
        ("period", FEB_10, MAR_10),
    ]
    # By hand: Basic (150 - 100) x 0.10 = 5.00 and March's 10.00; the add-on (30 - 10) x 0.50 = 10.00.
    assert [i.total for i in by_subscription[base.id]] == [1000, 1500]
    assert [i.total for i in by_subscription[add_on]] == [0, 1000]
    for mine, twin in ((by_subscription[base.id], base_twin), (by_subscription[add_on], add_on_twin)):
        theirs = await invoices_of(session, twin)
        assert [(i.kind, i.period_start, i.period_end, i.total) for i in mine] == [
            (i.kind, i.period_start, i.period_end, i.total) for i in theirs
        ]
        for own, twins in zip(mine, theirs, strict=True):
            assert await lines(session, own) == await lines(session, twins)
    # Billing again issues nothing twice; the next period of each is due on its own date.
    again = await run_billing(sessions, settings, as_of=MAR_10 + GRACE + timedelta(seconds=1))
    assert again.invoices_issued == 0
    march = await run_billing(sessions, settings, as_of=MAR_31 + GRACE + timedelta(seconds=1))
    assert march.invoices_issued == 2  # acme's Basic and its twin; the add-ons close on Apr 10


async def test_a_second_subscription_charging_the_same_meter_is_refused_and_writes_nothing(
    session: AsyncSession, add_on_catalog: None
) -> None:
    acme = await subscribe(session, "acme", "basic", JAN_31)
    add_on = await add(session, acme, "storage-addon", FEB_10)
    before = await counts(session)
    for plan in ("plus", "calls-addon", "storage-addon"):
        with pytest.raises(InvalidInput) as refused:
            await add(session, acme, plan, FEB_28, key=f"again-{plan}")
        assert (refused.value.field, refused.value.code) == ("planKey", "METER_ALREADY_CHARGED")
        await session.rollback()
    # A plan change may not bring the meter in either: the add-on moved to a plan charging calls.
    change = PlanChangeRequest(acme, "calls-addon", "IMMEDIATELY", "to-calls", "test", subscription_id=add_on)

    async def prorate(*_: Any) -> list[Any]:
        return []

    with pytest.raises(InvalidInput) as refused:
        await change_plan(session, change, as_of=FEB_28, prorate=prorate)
    assert (refused.value.field, refused.value.code) == ("planKey", "METER_ALREADY_CHARGED")
    await session.rollback()
    assert await counts(session) == before


async def test_an_added_subscription_is_added_once_per_idempotency_key(
    session: AsyncSession, add_on_catalog: None
) -> None:
    acme = await subscribe(session, "acme", "basic", JAN_31)
    first = await add(session, acme, "storage-addon", FEB_10, key="k")
    assert await add(session, acme, "storage-addon", FEB_10, key="k") == first
    with pytest.raises(IdempotencyKeyReused):
        await add(session, acme, "storage-addon", FEB_28, key="k")
    await session.rollback()
    assert len((await all_subscriptions_of(session, [acme]))[acme]) == 2


async def test_a_request_names_the_subscription_when_the_customer_has_several(
    session: AsyncSession, add_on_catalog: None
) -> None:
    acme = await subscribe(session, "acme", "basic", JAN_31)
    add_on = await add(session, acme, "storage-addon", FEB_10)
    someone_else = await subscribe(session, "other", "basic", JAN_31)
    before = await counts(session)
    cancel = LifecycleRequest(acme, CANCEL, "cancel", "test", timing="PERIOD_END")
    with pytest.raises(InvalidInput) as refused:
        await change_lifecycle(session, cancel, as_of=FEB_28, late_window=timedelta(days=7))
    assert (refused.value.field, refused.value.code) == ("subscriptionId", "SUBSCRIPTION_REQUIRED")
    await session.rollback()
    others = (await all_subscriptions_of(session, [someone_else]))[someone_else]
    with pytest.raises(InvalidInput) as refused:
        named = LifecycleRequest(acme, CANCEL, "cancel", "test", timing="PERIOD_END", subscription_id=others[0].id)
        await change_lifecycle(session, named, as_of=FEB_28, late_window=timedelta(days=7))
    assert (refused.value.field, refused.value.code) == ("subscriptionId", "NOT_FOUND")
    await session.rollback()
    charge = OneOffChargeRequest(acme, "setup", Decimal(1), Decimal(5), "USD", "next_invoice", "setup", "test")
    with pytest.raises(InvalidInput) as refused:
        await create_one_off_charge(session, charge, as_of=FEB_28)
    assert refused.value.field == "subscriptionId"
    await session.rollback()
    assert await counts(session) == before
    assert (await session.execute(text("SELECT count(*) FROM one_off_charges"))).scalar_one() == 0
    named_charge = OneOffChargeRequest(
        acme, "setup", Decimal(1), Decimal(5), "USD", "next_invoice", "setup", "test", subscription_id=add_on
    )
    outcome = await create_one_off_charge(session, named_charge, as_of=FEB_28)
    assert outcome.charge.subscription_id == add_on


async def test_canceling_the_add_on_leaves_the_base_plan_billing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, add_on_catalog: None
) -> None:
    acme = await subscribe(session, "acme", "basic", JAN_31)
    add_on = await add(session, acme, "storage-addon", FEB_10)
    await run_billing(sessions, settings, as_of=FEB_10 + timedelta(seconds=1))
    await send_storage(session, "acme", 30, datetime(2026, 2, 15, tzinfo=UTC))
    await send_calls(session, "acme", 150, datetime(2026, 2, 16, tzinfo=UTC))
    cancel_at = datetime(2026, 2, 20, tzinfo=UTC)
    request = LifecycleRequest(acme, CANCEL, "cancel-add-on", "test", timing="IMMEDIATELY", subscription_id=add_on)
    outcome = await change_lifecycle(session, request, as_of=cancel_at, late_window=timedelta(days=7))
    await session.commit()
    assert outcome.subscription.id == add_on and outcome.subscription.cancel_at == cancel_at
    final = outcome.issued[-1]
    # The add-on's allowance for the part of its period it ran (10 of 28 days), no fee, no next fee.
    expected = (30 - Decimal(10) * 10 / 28) * Decimal("0.50")
    assert (final.subscription_id, final.kind, final.total) == (add_on, "period", round(expected * 100))
    # Storage is no longer entitled; calls still are, answered by Basic.
    storage = await entitlement(session, acme, "storage", suspended=False, as_of=cancel_at + timedelta(hours=1))
    assert storage is not None and (storage.allowed, storage.reason) == (False, "SUBSCRIPTION_CANCELED")
    calls = await entitlement(session, acme, "calls", suspended=False, as_of=cancel_at + timedelta(hours=1))
    assert calls is not None and calls.allowed
    # Usage keeps being accepted (Basic runs), and Basic closes its period as before.
    await send_calls(session, "acme", 10, datetime(2026, 2, 21, tzinfo=UTC))
    report = await run_billing(sessions, settings, as_of=FEB_28 + GRACE + timedelta(seconds=1))
    assert report.invoices_issued == 1
    period = (await invoices_of(session, acme))[-1]
    [base] = [s for s in (await all_subscriptions_of(session, [acme]))[acme] if s.id != add_on]
    assert (period.subscription_id, period.kind, period.period_start) == (base.id, "period", JAN_31)
    assert period.total == 600 + 1000  # (160 - 100) x 0.10 and March's fee
    assert (await run_billing(sessions, settings, as_of=MAR_10 + GRACE)).invoices_issued == 0


async def test_entitlements_come_from_the_subscription_that_charges_the_meter(
    session: AsyncSession, add_on_catalog: None
) -> None:
    acme = await subscribe(session, "acme", "basic", JAN_31)
    await add(session, acme, "storage-addon", FEB_10)
    await send_storage(session, "acme", 3, datetime(2026, 2, 15, tzinfo=UTC))
    at = datetime(2026, 2, 16, tzinfo=UTC)
    storage = await entitlement(session, acme, "storage", suspended=False, as_of=at)
    assert storage is not None
    assert (storage.allowed, storage.used, storage.limit, storage.remaining) == (
        True,
        Decimal(3),
        Decimal(1000),
        Decimal(997),
    )
    edge = await entitlement_by_external_id(session, "acme", "storage", as_of=at)
    assert edge is not None and edge.entitlement == storage


ADD = """mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) {
  subscription { id plan { key } } userErrors { field code message } } }"""
USAGE = """query($id: ID!) { customer(id: $id) { subscription { id plan { key } } subscriptions { id plan { key } }
  usage { meter { key } quantity cost { amount } } } }"""


async def test_over_graphql_an_add_on_is_listed_and_its_meter_priced_and_a_same_meter_one_refused(
    session: AsyncSession, client: httpx.AsyncClient, token_for: Any, add_on_catalog: None
) -> None:
    started = now() - timedelta(days=5)
    acme = (
        await create_customer(
            session, NewCustomer("acme", "Acme", "USD", plan_key="basic", started_at=started), as_of=started
        )
    ).id
    await session.commit()
    token = await token_for("finance")
    add_input = {"customerId": str(acme), "planKey": "storage-addon", "idempotencyKey": "storage"}
    added = (await graphql(client, token, ADD, {"input": add_input})).json()["data"]["createSubscription"]
    assert added["userErrors"] == [] and added["subscription"]["plan"]["key"] == "storage-addon"
    before = await counts(session)
    same_meter = {"customerId": str(acme), "planKey": "calls-addon", "idempotencyKey": "calls"}
    refused = (await graphql(client, token, ADD, {"input": same_meter})).json()["data"]["createSubscription"]
    assert refused["subscription"] is None
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["planKey"], "METER_ALREADY_CHARGED")]
    assert await counts(session) == before
    await send_storage(session, "acme", 14, now())  # the add-on started with the request above

    customer = (await graphql(client, token, USAGE, {"id": str(acme)})).json()["data"]["customer"]
    assert customer["subscription"]["plan"]["key"] == "basic"
    assert [s["plan"]["key"] for s in customer["subscriptions"]] == ["basic", "storage-addon"]
    usage = {row["meter"]["key"]: (row["quantity"], row["cost"]["amount"]) for row in customer["usage"]}
    assert usage == {"calls": ("0", "0.00"), "storage": ("14", "2.00")}  # (14 - 10) x 0.50


async def test_a_meter_charged_again_after_its_first_subscription_ended_is_refused_only_if_both_refuse(
    session: AsyncSession, add_on_catalog: None
) -> None:
    """Basic charges calls and is canceled at its period's end; from then on the calls add-on may
    charge them (refused before: both would run). The add-on's own cancel is scheduled too, so
    both have a cancel and the primary is Basic, the first: once Basic has ended, its refusal is
    outvoted by the add-on's allowance; once both have ended, calls are refused."""
    acme = await subscribe(session, "acme", "basic", JAN_31)
    cancel = LifecycleRequest(acme, CANCEL, "cancel-basic", "test", timing="PERIOD_END")
    await change_lifecycle(session, cancel, as_of=FEB_10, late_window=timedelta(days=7))
    await session.commit()
    with pytest.raises(InvalidInput) as refused:
        await add(session, acme, "calls-addon", FEB_10, key="too-early")
    assert refused.value.code == "METER_ALREADY_CHARGED"
    await session.rollback()
    add_on = await add(session, acme, "calls-addon", FEB_28, key="from-feb-28")
    end_add_on = LifecycleRequest(acme, CANCEL, "cancel-add-on", "test", timing="PERIOD_END", subscription_id=add_on)
    await change_lifecycle(session, end_add_on, as_of=FEB_28 + timedelta(hours=1), late_window=timedelta(days=7))
    await session.commit()
    primary = (await subscriptions_of(session, [acme]))[acme]
    assert primary.id != add_on and primary.cancel_at == FEB_28
    after_basic = await entitlement(session, acme, "calls", suspended=False, as_of=FEB_28 + timedelta(days=1))
    assert after_basic is not None and (after_basic.allowed, after_basic.limit) == (True, None)
    both_ended = await entitlement(session, acme, "calls", suspended=False, as_of=MAR_31 + timedelta(days=1))
    assert both_ended is not None and (both_ended.allowed, both_ended.reason) == (False, "SUBSCRIPTION_CANCELED")
