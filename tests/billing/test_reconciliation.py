"""Reconciliation against a real localstripe: discrepancies planted on either side are exactly the
ones reported, with both sides; a run again finds nothing new; finance resolves them with a note;
a flow that both sides agree on (a payment and a refund) reports nothing."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.collection import stripe_gateway
from app.jobs import collect_invoices, process_stripe_events
from app.settings import Settings
from billing.collection.outcomes import Paid, post_invoice_payment
from billing.collection.stripe_gateway import StripeGateway, attempt_already_made, charge_off_session, saved_card
from billing.reconciliation.service import reconcile
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import (
    API_KEY,
    CARD_SUCCEEDS,
    LocalStripe,
    billed_with_card,
    event_of,
    fixture_with,
    signed,
)
from tests.conftest import graphql

PAID_AT = JAN_31 + timedelta(minutes=2)
RECONCILED_AT = JAN_31 + timedelta(days=1)
DISCREPANCIES = """query($status: String) { reconciliationDiscrepancies(status: $status) {
  id kind objectId summary customerExternalId tallySide stripeSide status note resolvedBy } }"""
RESOLVE = """mutation($i: ResolveDiscrepancyInput!) { resolveDiscrepancy(input: $i) {
  discrepancy { status note resolvedBy } userErrors { field code message } } }"""


async def invoice_of(session: AsyncSession, external_id: str) -> tuple[uuid.UUID, str]:
    """The opening invoice of a customer, and their Stripe customer."""
    row = await session.execute(
        text(
            "SELECT i.id, s.stripe_customer_id FROM invoices i JOIN customers c ON c.id = i.customer_id "
            "JOIN stripe_customers s ON s.customer_id = c.id WHERE c.external_id = :external_id"
        ),
        {"external_id": external_id},
    )
    invoice_id, stripe_customer = row.one()
    return invoice_id, stripe_customer


async def charged_in_stripe(
    gateway: StripeGateway, stripe_customer: str, invoice_id: uuid.UUID, *, attempt: int, amount: int = 1000
) -> str:
    """A payment Stripe takes for the invoice, as the outbox would ask for it; its PaymentIntent."""
    card = await saved_card(gateway, stripe_customer)
    assert card is not None
    await charge_off_session(
        gateway,
        stripe_customer_id=stripe_customer,
        payment_method=card,
        amount=amount,
        currency="USD",
        invoice_id=invoice_id,
        attempt=attempt,
    )
    made = await attempt_already_made(
        gateway, stripe_customer_id=stripe_customer, invoice_id=invoice_id, attempt=attempt
    )
    assert made is not None and made.status == "succeeded" and made.payment_intent_id
    return made.payment_intent_id


async def reconcile_cli(configured: Settings, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("tally")),
        "reconcile",
        "--as-of",
        (RECONCILED_AT + timedelta(hours=1)).isoformat(),
        "--json",
        env={
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": configured.database_url or "",
            "TALLY_DATA_DIR": str(tmp_path / "cli"),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": configured.stripe_api_base or "",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await process.communicate()
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out else {"stderr": errors.decode()}


async def test_planted_discrepancies_are_exactly_the_ones_reported(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    client: httpx.AsyncClient,
    token_for: Any,
    tmp_path: Path,
) -> None:
    localstripe.flush()  # reconciliation reads the whole Stripe account
    names = ["org_agrees", "org_unrecorded", "org_phantom", "org_cent", "org_twice"]
    for name in names:
        _, configured = await billed_with_card(session, sessions, settings, name, CARD_SUCCEEDS, localstripe)
    invoices = {name: await invoice_of(session, name) for name in names}
    planted = [invoices[name][0] for name in ("org_unrecorded", "org_phantom", "org_cent")]
    await session.execute(  # those three are paid (or not) by hand below, not by the worker
        text("UPDATE collection_outbox SET status = 'failed' WHERE invoice_id = ANY(:ids)"), {"ids": planted}
    )
    await session.commit()
    assert await collect_invoices(sessions, configured, as_of=PAID_AT) == 2  # org_agrees, org_twice
    gateway = stripe_gateway(configured)
    assert gateway is not None

    unrecorded = await charged_in_stripe(
        gateway, invoices["org_unrecorded"][1], invoices["org_unrecorded"][0], attempt=1
    )
    cent = await charged_in_stripe(gateway, invoices["org_cent"][1], invoices["org_cent"][0], attempt=1, amount=1001)
    second = await charged_in_stripe(gateway, invoices["org_twice"][1], invoices["org_twice"][0], attempt=2)
    for invoice_id, intent in ((invoices["org_phantom"][0], "pi_never_in_stripe"), (invoices["org_cent"][0], cent)):
        error = await post_invoice_payment(session, invoice_id, Paid(intent, None, 1000, "USD", PAID_AT), as_of=PAID_AT)
        assert error is None
    await session.commit()

    report = await reconcile(session, gateway, as_of=RECONCILED_AT)
    await session.commit()
    found = {(d.kind, d.object_id) for d in report.discrepancies}
    assert found == {
        ("MISSING_IN_TALLY", unrecorded),
        ("MISSING_IN_STRIPE", "pi_never_in_stripe"),
        ("AMOUNT_MISMATCH", cent),
        ("DUPLICATE", second),
    }
    assert report.new == 4
    [mismatch] = [d for d in report.discrepancies if d.kind == "AMOUNT_MISMATCH"]
    assert (mismatch.tally_side or {})["amount"] == 1000 and (mismatch.stripe_side or {})["amount"] == 1001

    exit_code, again = await reconcile_cli(configured, tmp_path)
    assert exit_code == 3, again
    assert {(d["kind"], d["object"]) for d in again["discrepancies"]} == found and again["new"] == 0

    finance = await token_for("finance")
    listed = (await graphql(client, finance, DISCREPANCIES, {"status": "open"})).json()["data"]
    rows = listed["reconciliationDiscrepancies"]
    assert len(rows) == 4 and {row["customerExternalId"] for row in rows} == {
        "org_unrecorded",
        "org_phantom",
        "org_cent",
        "org_twice",
    }
    duplicate = next(row for row in rows if row["kind"] == "DUPLICATE")
    assert duplicate["tallySide"] is None and duplicate["stripeSide"]["payment_intent"] == second
    refused = await graphql(client, finance, RESOLVE, {"i": {"discrepancyId": duplicate["id"], "note": " "}})
    assert refused.json()["data"]["resolveDiscrepancy"]["userErrors"][0]["field"] == ["note"]
    note = "second charge refunded in the Stripe dashboard"
    resolved = await graphql(client, finance, RESOLVE, {"i": {"discrepancyId": duplicate["id"], "note": note}})
    assert resolved.json()["data"]["resolveDiscrepancy"]["discrepancy"] == {
        "status": "resolved",
        "note": note,
        "resolvedBy": resolved.json()["data"]["resolveDiscrepancy"]["discrepancy"]["resolvedBy"],
    }
    still_open = (await graphql(client, finance, DISCREPANCIES, {"status": "open"})).json()["data"]
    assert len(still_open["reconciliationDiscrepancies"]) == 3
    viewer = await token_for("viewer")
    assert (await graphql(client, viewer, DISCREPANCIES, {})).json()["errors"], "finance only"


@pytest.mark.parametrize("refund_reported", [True, False])
async def test_a_payment_and_its_refund_reconcile_once_the_refund_is_posted(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    refund_reported: bool,
) -> None:
    localstripe.flush()
    _, configured = await billed_with_card(session, sessions, settings, "org_clean", CARD_SUCCEEDS, localstripe)
    await collect_invoices(sessions, configured, as_of=PAID_AT)
    intent, charge = (await session.execute(text("SELECT payment_intent_id, charge_id FROM stripe_payments"))).one()
    localstripe.client().v1.refunds.create(params={"charge": charge, "amount": 300})
    if refund_reported:
        refunded = fixture_with(
            "charge", id=charge, payment_intent=intent, amount=1000, amount_refunded=300, currency="usd"
        )
        payload = event_of("charge.refunded", refunded, "evt_refund_300")
        await stripe_app.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": signed(payload)})
        await process_stripe_events(sessions, configured, as_of=PAID_AT + timedelta(hours=1))
    gateway = stripe_gateway(configured)
    assert gateway is not None
    report = await reconcile(session, gateway, as_of=RECONCILED_AT)
    found = [(d.kind, d.object_id, d.summary) for d in report.discrepancies]
    if refund_reported:
        assert found == [] and report.checked == 2
    else:
        assert found == [
            ("AMOUNT_MISMATCH", f"{charge}:refunds", f"refunds of {charge}: 300 in Stripe, 0 in the ledger")
        ]
