"""The collection pages in a real browser against the running server with the demo loaded (no
Stripe key): a customer's Payments tab saying collection is off, and on the Reconciliation page a
discrepancy expanded in place by htmx, both sides compared, resolved with a note, then found
again through the status filter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def plant_discrepancy(server: LiveServer) -> str:
    """A one-cent mismatch, as reconciliation records it (the demo has no Stripe to reconcile with)."""
    discrepancy_id = uuid.uuid4()
    tally = {"payment_intent": "pi_e2e_cent", "amount": 1000, "currency": "USD"}
    stripe = {**tally, "amount": 1001}
    with psycopg.connect(server.database_url) as connection:
        connection.execute(
            "INSERT INTO reconciliation_discrepancies (id, kind, object_id, summary, tally_side, stripe_side, "
            "detected_at, last_seen_at, status) VALUES (%s, 'AMOUNT_MISMATCH', 'pi_e2e_cent', "
            "'Tally has 10.00 USD, Stripe 10.01 USD', %s, %s, %s, %s, 'open')",
            (discrepancy_id, json.dumps(tally), json.dumps(stripe), datetime.now(UTC), datetime.now(UTC)),
        )
    return str(discrepancy_id)


def test_browser_journey_payments_tab_and_a_discrepancy_resolved(
    live_server: LiveServer, browser, tmp_path: Path
) -> None:
    discrepancy_id = plant_discrepancy(live_server)
    page = signed_in_page(browser, live_server)
    page.fill("input[type=search]", "hooli")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.click("#customer-rows a")
    page.wait_for_selector("h1:has-text('Hooli Search')")
    page.click("nav.tabs >> text=Payments")
    page.wait_for_url("**/payments")
    assert "Collection is off: set STRIPE_API_KEY" in page.inner_text("#collection")
    page.screenshot(path=str(tmp_path / "payments-tab.png"), full_page=True)

    page.click("nav >> text=Reconciliation")
    page.wait_for_url("**/console/reconciliation")
    row = page.locator(f"#discrepancy-{discrepancy_id}")
    assert "Tally has 10.00 USD, Stripe 10.01 USD" in row.inner_text()
    page.evaluate("window.stillTheSamePage = true")
    row.locator("a.compare").click()
    page.wait_for_selector(f"#compare-{discrepancy_id} table.comparison")
    assert page.evaluate("window.stillTheSamePage === true"), "htmx expanded the row in place"
    differing = row.locator("tr.differs")
    assert differing.count() == 1 and "1001" in differing.inner_text()
    page.screenshot(path=str(tmp_path / "reconciliation.png"), full_page=True)

    row.locator("input[name=note]").fill("Stripe rounded a tax line; refunded the cent")
    row.locator("button:has-text('Resolve')").click()
    page.wait_for_selector("p.notice:has-text('Resolved')")
    assert page.locator(f"#discrepancy-{discrepancy_id}").count() == 0, "no longer open"
    page.select_option("select[name=status]", "resolved")
    page.wait_for_url("**/console/reconciliation?status=resolved")
    resolved = page.locator(f"#discrepancy-{discrepancy_id}").inner_text()
    assert "resolved" in resolved and "Stripe rounded a tax line; refunded the cent" in resolved
    page.close()
