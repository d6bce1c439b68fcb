"""The invoice-line view in a real browser, against the running server with the demo loaded:
"Why this amount?" expands under its line in place (htmx), and the link is a page of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def test_browser_journey_why_this_amount(live_server: LiveServer, browser, tmp_path: Path) -> None:
    page = signed_in_page(browser, live_server)
    page.fill("input[type=search]", "hooli")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.click("#customer-rows a")
    page.click("nav.tabs >> text=Invoices")
    page.wait_for_url("**/invoices")
    page.locator("#invoice-rows a").first.click()
    page.wait_for_selector(".invoice-lines")
    invoice_url = page.url
    usage_row = page.locator(".invoice-lines tbody tr", has_text="Premium requests").first
    usage_row.locator("a.why-link").click()

    page.wait_for_selector(".why-row .provenance")
    assert page.url == invoice_url, "expanded in place, no navigation"
    explained = page.inner_text(".why-row .provenance")
    assert "Why this amount?" in explained and "Meter requests" in explained
    assert "This line billed the" in explained and "event(s)" in explained
    assert page.locator(".why-row .provenance-events tbody tr").count() >= 1, "sample events"
    page.screenshot(path=str(tmp_path / "why-this-amount.png"), full_page=True)

    href = usage_row.locator("a.why-link").get_attribute("href")
    page.goto(f"{live_server.base_url}{href}")
    page.wait_for_selector("main .provenance")
    assert "Premium requests" in page.inner_text("h1")
