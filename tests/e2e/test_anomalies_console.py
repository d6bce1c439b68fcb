"""The Anomalies page in a real browser against the running server with the demo loaded: a scan
from the command line, a filter htmx swaps in (and pushes to the address bar), and a resolution
with a note."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def test_browser_journey_scan_filter_and_resolve(live_server: LiveServer, browser, tmp_path: Path) -> None:
    # Two hours on, the demo's quarantined events have waited too long.
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    # The demo quarantines a few events; other test files sharing this server may add more.
    waiting = len(json.loads(live_server.cli("events", "quarantine", "--json")))
    assert waiting >= 3
    report = json.loads(live_server.cli("anomalies", "scan", "--as-of", later, "--json"))
    assert report["found"]["QUARANTINE"] == 1 and report["found"]["LEDGER_INVARIANT"] == 0

    page = signed_in_page(browser, live_server)
    page.click("nav >> text=Anomalies")
    page.wait_for_url("**/console/anomalies")
    page.evaluate("window.stillTheSamePage = true")
    page.select_option("select[name=kind]", "QUARANTINE")
    page.wait_for_url("**/console/anomalies?kind=QUARANTINE&*")
    expect(page.locator("#anomaly-rows tr")).to_have_count(1, timeout=30_000)
    assert page.evaluate("window.stillTheSamePage === true"), "htmx swapped the rows in; no navigation"
    row = page.locator("#anomaly-rows tr").first
    assert f"{waiting} event(s) waiting in quarantine" in row.inner_text()
    assert page.get_attribute("a:has-text('Export CSV')", "href") == "/console/anomalies.csv?kind=QUARANTINE"
    page.screenshot(path=str(tmp_path / "anomalies.png"), full_page=True)

    row.locator("input[name=note]").fill("org_newco signs up next week; replay then")
    row.locator("button:has-text('Resolve')").click()
    page.wait_for_selector("p.notice:has-text('Resolved')")
    assert "kind=QUARANTINE" in page.url
    resolved = page.locator("#anomaly-rows tr").first.inner_text()
    assert "resolved" in resolved and "org_newco signs up next week; replay then" in resolved
    page.close()
