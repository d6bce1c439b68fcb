"""Stripe webhook intake over HTTP: signatures and their timestamps verified, events stored once
by id, other types kept and marked ignored, Stripe's own example objects read without error.

The events are signed here with the endpoint secret, exactly as Stripe signs them (HMAC-SHA256 of
"timestamp.payload"): localstripe is not needed to test the intake itself."""

from __future__ import annotations

import copy
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.jobs import process_stripe_events
from app.settings import Settings
from ledger import service as ledger
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, JAN_31, invoices_of, subscribe
from tests.billing.stripe_support import FIXTURES, event_of, signed
from tests.conftest import SHARED


async def post(client: httpx.AsyncClient, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json", **({"Stripe-Signature": signature} if signature else {})}
    return await client.post("/webhooks/stripe", content=payload, headers=headers)


async def stored(session: AsyncSession) -> list[tuple[str, str, int]]:
    rows = await session.execute(text("SELECT id, status, deliveries FROM stripe_events ORDER BY id"))
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_signed_event_is_stored_once_however_often_it_arrives(
    webhook_client: httpx.AsyncClient, session: AsyncSession
) -> None:
    payload = event_of("payment_intent.succeeded", FIXTURES["payment_intent"])
    answers = [await post(webhook_client, payload, signed(payload)) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    assert await stored(session) == [("evt_test_1", "received", 5)]
    object_id = (await session.execute(text("SELECT object_id FROM stripe_events"))).scalar_one()
    assert object_id == FIXTURES["payment_intent"]["id"]


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "t=1,v1=deadbeef",
        "garbage",
        "forged with another secret",
        "stale: signed 301 seconds ago",
        "signed over another body",
    ],
)
async def test_a_missing_forged_or_stale_signature_is_400_and_stores_nothing(
    webhook_client: httpx.AsyncClient, session: AsyncSession, signature: str | None
) -> None:
    payload = event_of("payment_intent.succeeded", FIXTURES["payment_intent"])
    header = {
        "forged with another secret": signed(payload, secret="whsec_someone_else"),
        "stale: signed 301 seconds ago": signed(payload, at=int(time.time()) - 301),
        "signed over another body": signed(payload.replace(b"evt_test_1", b"evt_test_2")),
    }.get(signature or "", signature)
    answer = await post(webhook_client, payload, header)
    assert answer.status_code == 400
    assert answer.json()["code"] == "SIGNATURE_INVALID"
    assert await stored(session) == []


async def test_webhooks_are_refused_while_no_secret_is_configured(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    payload = event_of("payment_intent.succeeded", FIXTURES["payment_intent"])
    answer = await post(client, payload, signed(payload))
    assert answer.status_code == 400 and "STRIPE_WEBHOOK_SECRET" in answer.json()["message"]
    assert await stored(session) == []


async def test_other_event_types_are_kept_and_marked_ignored(
    webhook_client: httpx.AsyncClient, session: AsyncSession
) -> None:
    payload = event_of("price.updated", FIXTURES["price"], "evt_price")
    assert (await post(webhook_client, payload, signed(payload))).json()["status"] == "ignored"
    assert await stored(session) == [("evt_price", "ignored", 1)]


NOT_A_TALLY_PAYMENT = ("ignored", "not the payment of a Tally invoice")
NO_METADATA = ("ignored", "not the payment of a Tally invoice (no tally_invoice_id in its metadata)")


@pytest.mark.parametrize(
    ("kind", "resource", "expected"),
    [
        ("payment_intent.succeeded", "payment_intent", NO_METADATA),
        ("payment_intent.payment_failed", "payment_intent", NO_METADATA),
        ("payment_intent.requires_action", "payment_intent", NO_METADATA),
        ("charge.refunded", "charge", NOT_A_TALLY_PAYMENT),
        ("charge.refund.updated", "refund", ("ignored", None)),
        ("charge.dispute.created", "dispute", NOT_A_TALLY_PAYMENT),
        ("customer.updated", "customer", ("ignored", "not the Stripe customer of a Tally customer")),
        ("payment_method.attached", "payment_method", ("ignored", "not the Stripe customer of a Tally customer")),
        ("payout.paid", "payout", ("ignored", "a payout of 1100 that is in_transit")),
    ],
)
async def test_stripes_own_example_objects_are_read(
    webhook_client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    kind: str,
    resource: str,
    expected: tuple[str, str | None],
) -> None:
    payload = event_of(kind, FIXTURES[resource], f"evt_{resource}")
    answer = await post(webhook_client, payload, signed(payload))
    assert answer.status_code == 200, answer.text
    row = (await session.execute(text("SELECT type, object_id, livemode FROM stripe_events"))).one()
    assert tuple(row) == (kind, FIXTURES[resource]["id"], FIXTURES["event"]["livemode"])
    await process_stripe_events(sessions, settings, as_of=JAN_31)
    status, error = (await session.execute(text("SELECT status, error FROM stripe_events"))).one()
    assert (status, error) == expected, "read, and left alone: Stripe's examples are about no Tally invoice"


def test_the_fixtures_are_stripes_published_objects() -> None:
    assert Path(SHARED / "stripe" / "fixtures3.json").is_file()
    assert {"event", "payment_intent", "charge", "refund", "dispute"} <= set(FIXTURES)


async def issued_invoice(session: AsyncSession, sessions: Any, settings: Settings) -> Any:
    """A real invoice: the opening invoice of a Basic customer, 10.00 due."""
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=1))
    await session.commit()
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    [invoice] = await invoices_of(session, customer_id)
    return invoice


def payment_of(invoice: Any, amount: int, intent_id: str = "pi_tally_1") -> dict[str, Any]:
    intent = copy.deepcopy(FIXTURES["payment_intent"])
    intent.update(
        {
            "id": intent_id,
            "amount": amount,
            "amount_received": amount,
            "currency": "usd",
            "status": "succeeded",
            "metadata": {"tally_invoice_id": str(invoice.id)},
        }
    )
    return intent


async def test_a_succeeded_payment_is_posted_once_and_pays_the_invoice(
    webhook_client: httpx.AsyncClient, session: AsyncSession, sessions: Any, settings: Settings
) -> None:
    invoice = await issued_invoice(session, sessions, settings)
    payload = event_of("payment_intent.succeeded", payment_of(invoice, 1000), "evt_paid")
    for _ in range(3):
        assert (await post(webhook_client, payload, signed(payload))).status_code == 200
    assert await process_stripe_events(sessions, settings, as_of=JAN_31 + timedelta(minutes=2)) == 1
    assert await process_stripe_events(sessions, settings, as_of=JAN_31 + timedelta(minutes=3)) == 0
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "paid"
    balances = await ledger.balances(session, invoice.customer_id, "USD")
    assert balances.outstanding == 0
    payments = (
        await session.execute(text("SELECT count(*) FROM ledger_transactions WHERE kind = 'payment'"))
    ).scalar_one()
    assert payments == 1
    assert await stored(session) == [("evt_paid", "processed", 3)]


async def test_a_payment_that_does_not_match_the_invoice_changes_nothing_and_says_why(
    webhook_client: httpx.AsyncClient, session: AsyncSession, sessions: Any, settings: Settings
) -> None:
    invoice = await issued_invoice(session, sessions, settings)
    payload = event_of("payment_intent.succeeded", payment_of(invoice, 999), "evt_short")
    await post(webhook_client, payload, signed(payload))
    await process_stripe_events(sessions, settings, as_of=JAN_31 + timedelta(minutes=2))
    assert (await session.execute(text("SELECT status FROM invoices"))).scalar_one() == "issued"
    status, error = (await session.execute(text("SELECT status, error FROM stripe_events"))).one()
    assert status == "failed" and "paid 999 USD" in error and "due 1000 USD" in error
    assert (await ledger.balances(session, invoice.customer_id, "USD")).outstanding == 1000
