"""The webhook events the domains emit: each change tells the product once, in its own transaction,
with the resource as its GraphQL type shows it (every event read here is checked against the
committed schema, so the payloads cannot drift from it); a retried change tells nothing more, a
rolled-back one nothing at all, and a resource's events carry increasing versions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLObjectType, build_schema, get_named_type
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.jobs import expire_credit_grants, tell_trial_endings
from app.settings import Settings
from billing.collection.outcomes import Attempt, Paid, record_outcome, settle_payment
from billing.collection.stripe_gateway import Charge
from billing.collection.unpaid_invoices import void_invoice
from billing.findings import Finding, raise_anomaly
from billing.invoices.credit_notes import CreditNoteRequest, create_credit_note
from billing.invoices.plan_changes import change_plan
from billing.invoices.trial_ends import TRIAL_END_REASON
from customers import credits
from customers.billing_detail_changes import BillingDetailsPatch, update_billing_details
from customers.lifecycle import CANCEL, PAUSE, RESUME, UNPAUSE
from customers.service import NewCustomer, create_customer
from customers.subscriptions import PlanChangeRequest
from customers.trials import announce_trial_endings
from notifications.webhook_events import EVENT_TYPES
from pricing.service import apply_catalog
from tests.billing import lifecycle_support
from tests.billing.scenario import JAN_31, invoices_of, subscribe

SCHEMA = build_schema((Path(__file__).resolve().parents[2] / "graphql" / "schema.graphql").read_text())
OPENED = JAN_31 + timedelta(minutes=1)
# What each type emitted by the domains tells of (the others are emitted by alerts and entitlements).
RESOURCE_OF = {
    "customer.created": "Customer",
    "customer.updated": "Customer",
    "subscription.created": "Subscription",
    "subscription.trial_ending": "Subscription",
    "subscription.changed": "Subscription",
    "subscription.paused": "Subscription",
    "subscription.resumed": "Subscription",
    "subscription.cancelled": "Subscription",
    "invoice.issued": "Invoice",
    "invoice.paid": "Invoice",
    "invoice.payment_failed": "Invoice",
    "invoice.voided": "Invoice",
    "credit_note.issued": "CreditNote",
    "credits.granted": "CreditGrant",
    "credits.expired": "CreditGrant",
    "anomaly.opened": "Anomaly",
}


def unknown_fields(type_name: str, data: dict[str, Any]) -> list[str]:
    """The keys of ``data`` (and of the objects nested in it) that are no field of the GraphQL type."""
    graphql_type = SCHEMA.get_type(type_name)
    assert isinstance(graphql_type, GraphQLObjectType), type_name
    unknown = []
    for key, value in data.items():
        field = graphql_type.fields.get(key)
        if field is None:
            unknown.append(f"{type_name}.{key}")
        elif isinstance(value, dict):
            unknown += unknown_fields(get_named_type(field.type).name, value)
    return unknown


async def told(session: AsyncSession, *types: str) -> list[dict[str, Any]]:
    """The events recorded (of ``types``, else all), oldest first, each checked against the schema."""
    rows = await session.execute(
        text(
            "SELECT event_key, type, customer_id, resource_type, resource_id, resource_version, data "
            "FROM webhook_events ORDER BY created_at, resource_version, event_key"
        )
    )
    events = [dict(row._mapping) for row in rows]
    for event in events:
        assert event["resource_type"] == RESOURCE_OF[event["type"]]
        assert unknown_fields(event["resource_type"], event["data"]) == []
        assert event["data"]["id"] == event["resource_id"]
    return [event for event in events if not types or event["type"] in types]


def test_every_emitted_type_is_known_and_names_a_graphql_type() -> None:
    assert set(RESOURCE_OF) <= set(EVENT_TYPES)
    assert all(isinstance(SCHEMA.get_type(name), GraphQLObjectType) for name in RESOURCE_OF.values())


async def test_a_customer_their_invoice_and_its_payment_are_told_once_each_with_growing_versions(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    [created] = await told(session, "customer.created")
    [subscribed] = await told(session, "subscription.created")
    assert created["customer_id"] == subscribed["customer_id"] == customer_id
    assert created["data"]["externalId"] == "acme" and created["data"]["billingDetails"]["taxExemption"] == "NONE"
    assert subscribed["data"]["plan"]["key"] == "basic" and subscribed["data"]["status"] == "ACTIVE"
    assert subscribed["data"]["currentPeriodStart"] == JAN_31.isoformat()

    patch = BillingDetailsPatch(legal_name="Acme SAS", country="FR")
    for _ in range(2):  # the second changes nothing, and tells nothing
        await update_billing_details(session, customer_id, patch, actor="test", as_of=OPENED)
        await session.commit()
    [updated] = await told(session, "customer.updated")
    assert updated["data"]["billingDetails"]["legalName"] == "Acme SAS"
    assert updated["data"]["billingDetails"]["address"]["country"] == "FR"
    assert (created["resource_version"], updated["resource_version"]) == (1, 2)

    await run_billing(sessions, settings, as_of=OPENED)
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)
    [issued] = await told(session, "invoice.issued")
    assert issued["event_key"] == f"invoice.issued:{invoice.id}" and issued["customer_id"] == customer_id
    assert issued["data"]["number"] == f"INV-{invoice.number:06d}"
    assert issued["data"]["status"] == "ISSUED" and issued["data"]["kind"] == "opening"
    assert issued["data"]["amountDue"] == {"amount": "10.00", "currency": "USD"}
    assert issued["data"]["amountStillDue"] == issued["data"]["amountDue"]
    assert issued["data"]["subscriptionId"] == str(subscribed["resource_id"])

    paid = Paid("pi_1", "ch_1", invoice.amount_due, "USD", paid_at=OPENED + timedelta(hours=1))
    for _ in range(2):  # the worker and the webhook both report it
        assert await settle_payment(session, invoice.id, paid, as_of=OPENED + timedelta(hours=1)) is None
        await session.commit()
    [settled] = await told(session, "invoice.paid")
    assert settled["event_key"] == f"invoice.paid:{invoice.id}" and settled["data"]["status"] == "PAID"
    assert (issued["resource_version"], settled["resource_version"]) == (1, 2)


async def test_a_rolled_back_change_tells_nothing(session: AsyncSession, billing_catalog: None) -> None:
    new = NewCustomer(external_id="gone", name="Gone", currency="USD", plan_key="basic", started_at=JAN_31)
    await create_customer(session, new, as_of=JAN_31)
    await session.rollback()
    assert await told(session) == []


async def test_each_failed_attempt_is_told_once_and_a_void_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)
    retry_after = (timedelta(days=3), timedelta(days=5))
    declined = Charge("failed", "pi_1", "Your card was declined.")
    for number in (1, 1, 2):  # the first attempt reported by the worker and by the webhook
        attempt = Attempt(invoice.id, customer_id, number, invoice.amount_due, "USD")
        await record_outcome(session, attempt, declined, as_of=OPENED, retry_after=retry_after)
        await session.commit()
    failures = await told(session, "invoice.payment_failed")
    assert [event["event_key"] for event in failures] == [
        f"invoice.payment_failed:{invoice.id}:1",
        f"invoice.payment_failed:{invoice.id}:2",
    ]
    assert {(event["customer_id"], event["data"]["status"]) for event in failures} == {(customer_id, "ISSUED")}

    for _ in range(2):  # a retried void answers with the invoice as it is
        await void_invoice(
            session, invoice.id, reason="sent in error", actor="test", idempotency_key="void-1", as_of=OPENED
        )
        await session.commit()
    [voided] = await told(session, "invoice.voided")
    assert voided["data"]["status"] == "VOID"
    versions = [e["resource_version"] for e in await told(session) if e["resource_type"] == "Invoice"]
    assert versions == [1, 2, 3, 4]


async def test_a_credit_note_settled_as_credit_tells_the_note_and_the_grant(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)
    request = CreditNoteRequest(
        invoice_id=invoice.id,
        method="CREDIT",
        reason="duplicate",
        idempotency_key="cn-1",
        actor="test",
        amount=Decimal("4.00"),
    )
    for _ in range(2):
        await create_credit_note(session, request, as_of=OPENED)
        await session.commit()
    [note] = await told(session, "credit_note.issued")
    assert note["customer_id"] == customer_id and note["data"]["invoiceId"] == str(invoice.id)
    assert note["data"]["amount"] == {"amount": "4.00", "currency": "USD"}
    assert (note["data"]["method"], note["data"]["reason"], note["data"]["status"]) == ("CREDIT", "DUPLICATE", "ISSUED")
    assert note["data"]["invoiceNumber"] == f"INV-{invoice.number:06d}"
    [granted] = await told(session, "credits.granted")
    assert granted["data"]["source"] == "credit_note" and granted["data"]["amount"]["amount"] == "4.00"


async def test_grants_and_their_expiry_are_told_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    expires = JAN_31 + timedelta(days=10)
    for _ in range(2):  # a retried grant returns the first
        await credits.grant_credits(
            session,
            customer_id=customer_id,
            currency="USD",
            amount=1500,
            reason="welcome",
            actor="test",
            idempotency_key="welcome",
            as_of=JAN_31,
            expires_at=expires,
            priority=5,
        )
        await session.commit()
    [granted] = await told(session, "credits.granted")
    assert granted["customer_id"] == customer_id
    assert granted["data"]["amount"] == {"amount": "15.00", "currency": "USD"}
    assert (granted["data"]["status"], granted["data"]["priority"]) == ("ACTIVE", 5)
    assert granted["data"]["expiresAt"] == expires.isoformat()

    for _ in range(2):  # the periodic expiry job runs again
        await expire_credit_grants(sessions, as_of=expires + timedelta(seconds=1))
    [expired] = await told(session, "credits.expired")
    assert expired["resource_id"] == granted["resource_id"] and expired["data"]["status"] == "EXPIRED"
    assert expired["resource_version"] == 2


async def test_an_anomaly_is_told_when_it_is_opened_only(session: AsyncSession, billing_catalog: None) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    finding = Finding(
        kind="USAGE_SPIKE",
        customer_id=customer_id,
        window_start=JAN_31,
        window_end=JAN_31 + timedelta(days=1),
        severity="high",
        summary="usage 5x the usual",
        numbers={"ratio": Decimal("5.00"), "events": 500},
    )
    assert await raise_anomaly(session, finding, as_of=OPENED)
    assert not await raise_anomaly(session, finding, as_of=OPENED + timedelta(hours=1))
    await session.commit()
    [opened] = await told(session, "anomaly.opened")
    assert opened["customer_id"] == customer_id
    assert (opened["data"]["kind"], opened["data"]["severity"], opened["data"]["status"]) == (
        "USAGE_SPIKE",
        "HIGH",
        "OPEN",
    )
    assert opened["data"]["numbers"] == '{"events": 500, "ratio": "5.00"}'


LIFECYCLE_START = JAN_31
NEEDS_CARD = """
[[plans]]
key = "needscard"
name = "Needs card"
currency = "USD"
interval = "month"
base_fee = "20.00"
trial_days = 7
trial_requires_payment_method = true
"""


@pytest.fixture
async def lifecycle_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, lifecycle_support.CATALOG + NEEDS_CARD, as_of=LIFECYCLE_START - timedelta(days=30))
    await session.commit()


async def test_lifecycle_requests_and_plan_changes_are_told_once_each(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    customer_id = await lifecycle_support.subscribe(session, "acme", "hundred", LIFECYCLE_START)
    day = timedelta(days=1)
    await lifecycle_support.lifecycle(session, customer_id, PAUSE, as_of=LIFECYCLE_START + 2 * day, dry_run=True)
    assert await told(session, "subscription.paused") == []
    await lifecycle_support.lifecycle(session, customer_id, PAUSE, as_of=LIFECYCLE_START + 2 * day, key="pause")
    await lifecycle_support.lifecycle(session, customer_id, PAUSE, as_of=LIFECYCLE_START + 2 * day, key="pause")
    await lifecycle_support.lifecycle(session, customer_id, UNPAUSE, as_of=LIFECYCLE_START + 3 * day)
    request = PlanChangeRequest(customer_id, "sixty", "IMMEDIATELY", "change-1", "test")
    for _ in range(2):
        await change_plan(session, request, as_of=LIFECYCLE_START + 4 * day)
        await session.commit()
    await lifecycle_support.lifecycle(
        session, customer_id, CANCEL, as_of=LIFECYCLE_START + 5 * day, timing="PERIOD_END", reason="too dear"
    )
    await lifecycle_support.lifecycle(session, customer_id, RESUME, as_of=LIFECYCLE_START + 6 * day)

    events = await told(session)
    subscription_events = [e for e in events if e["resource_type"] == "Subscription"]
    assert [e["type"] for e in subscription_events] == [
        "subscription.created",
        "subscription.paused",
        "subscription.resumed",
        "subscription.changed",
        "subscription.cancelled",
        "subscription.resumed",
    ]
    assert [e["resource_version"] for e in subscription_events] == [1, 2, 3, 4, 5, 6]
    created, paused, unpaused, changed, cancelled, resumed = (e["data"] for e in subscription_events)
    assert (paused["status"], paused["pausedAt"]) == ("PAUSED", (LIFECYCLE_START + 2 * day).isoformat())
    assert (unpaused["status"], unpaused["pausedAt"]) == ("ACTIVE", None)
    assert (created["plan"]["key"], changed["plan"]["key"]) == ("hundred", "sixty")
    assert cancelled["status"] == "ACTIVE" and cancelled["cancelReason"] == "too dear"
    assert cancelled["cancelAt"] == cancelled["currentPeriodEnd"]
    assert resumed["cancelAt"] is None
    assert {e["customer_id"] for e in subscription_events} == {customer_id}


async def test_a_trial_ending_is_told_once_three_days_ahead_by_the_periodic_job(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], lifecycle_catalog: None
) -> None:
    customer_id = await lifecycle_support.subscribe(session, "acme", "hundred", LIFECYCLE_START, trial_days=14)
    trial_end = LIFECYCLE_START + timedelta(days=14)
    assert await announce_trial_endings(session, as_of=LIFECYCLE_START + timedelta(days=1)) == 0
    await session.rollback()
    assert await tell_trial_endings(sessions, as_of=trial_end - timedelta(days=2)) == 1
    assert await tell_trial_endings(sessions, as_of=trial_end - timedelta(days=1)) == 0  # the job again
    [ending] = await told(session, "subscription.trial_ending")
    assert ending["customer_id"] == customer_id
    assert ending["data"]["trialEndsAt"] == trial_end.isoformat() and ending["data"]["inTrial"] is True
    assert ending["event_key"].endswith(f":{trial_end.isoformat()}")
    assert await announce_trial_endings(session, as_of=trial_end + timedelta(seconds=1)) == 0


def test_unknown_fields_are_caught() -> None:
    assert unknown_fields("Invoice", {"id": "1", "amount": {"amount": "1.00"}}) == ["Invoice.amount"]
    assert unknown_fields("Customer", {"billingDetails": {"address": {"zip": "1"}}}) == ["Address.zip"]


async def test_tallys_own_cancel_at_a_trial_end_without_a_card_is_told_once(
    session: AsyncSession, lifecycle_catalog: None
) -> None:
    customer_id = await lifecycle_support.subscribe(session, "nocard", "needscard", LIFECYCLE_START)
    for days in (8, 9):  # the billing run again
        await lifecycle_support.bill(session, customer_id, LIFECYCLE_START + timedelta(days=days))
    [cancelled] = await told(session, "subscription.cancelled")
    assert cancelled["customer_id"] == customer_id
    assert cancelled["data"]["cancelReason"] == TRIAL_END_REASON
    assert cancelled["data"]["cancelAt"] == (LIFECYCLE_START + timedelta(days=7)).isoformat()
    assert cancelled["data"]["status"] == "CANCELED"
