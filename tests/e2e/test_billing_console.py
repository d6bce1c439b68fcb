"""The console's billing pages in a real browser, against the running server with the demo
loaded: a customer's invoices, an invoice, a plan-change preview swapped in by htmx, a price
simulation, and the customer pages still working after it (a simulation's rollback once
poisoned the process-wide plan-version cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import DEMO_CATALOG
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e


def signed_in_page(browser, server: LiveServer):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.base_url}/console/login")
    page.fill("input[name=email]", server.admin_email)
    page.fill("input[name=password]", server.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/customers")
    return page


def simulate_a_base_fee_change(page) -> None:  # type: ignore[no-untyped-def]
    page.click("nav >> text=Pricing")
    page.wait_for_url("**/console/pricing")
    page.fill("textarea[name=catalog]", DEMO_CATALOG.read_text().replace('base_fee = "20.00"', 'base_fee = "25.00"'))
    page.evaluate("window.stillTheSamePage = true")
    page.click("#simulate-button")
    page.wait_for_selector("#simulation-results")
    assert page.evaluate("window.stillTheSamePage === true"), "htmx swapped the results in"


def test_browser_journey_invoices_plan_change_preview_and_pricing(
    live_server: LiveServer, browser, tmp_path: Path
) -> None:
    page = signed_in_page(browser, live_server)
    page.fill("input[type=search]", "hooli")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.click("#customer-rows a")
    page.wait_for_selector("h1:has-text('Hooli Search')")
    page.click("nav.tabs >> text=Invoices")
    page.wait_for_url("**/invoices")
    assert page.locator("#invoice-rows a").count() >= 1, "the demo issued Hooli's invoices"
    upcoming = page.inner_text("#upcoming-invoice")
    assert "Credits that would apply" in upcoming and "Amount due" in upcoming
    main = page.text_content("main") or ""
    assert "Current period" in main and "Outstanding" in main, "the subscription and the balance"
    tab_url = page.url
    page.screenshot(path=str(tmp_path / "invoices-tab.png"), full_page=True)

    number = page.locator("#invoice-rows a").first.inner_text()
    page.locator("#invoice-rows a").first.click()
    page.wait_for_selector(f"h1:has-text('Invoice {number}')")
    assert page.locator(".invoice-lines tbody tr").count() >= 1
    assert page.locator(".ledger-entries tbody tr").count() >= 1
    assert "Amount due" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "invoice.png"), full_page=True)

    page.goto(tab_url)
    page.select_option("select[name=plan_key]", "pro")
    page.check("input[name=effective][value=IMMEDIATELY]")
    page.evaluate("window.stillTheSamePage = true")
    page.click("#plan-change button:has-text('Preview')")
    page.wait_for_selector(".prorations tbody tr td.num")
    assert page.evaluate("window.stillTheSamePage === true"), "htmx swapped the preview in; no navigation"
    prorations = page.inner_text(".prorations tbody")
    assert "USD" in prorations and "-" in prorations, "a credit for the rest of the Team period"
    assert page.locator("#plan-change button:has-text('Confirm change')").is_visible()
    assert page.url == tab_url
    page.screenshot(path=str(tmp_path / "plan-change-preview.png"), full_page=True)

    simulate_a_base_fee_change(page)
    assert page.locator("svg.distribution rect.bar").count() == 6
    customers = page.inner_text(".simulated-customers")
    assert "org_globex" in customers and "Globex Analytics" in customers
    assert "USD" in page.inner_text(".totals-table")
    page.screenshot(path=str(tmp_path / "pricing.png"), full_page=True)
    page.close()


def test_customer_pages_still_load_after_a_price_simulation(live_server: LiveServer, browser) -> None:
    page = signed_in_page(browser, live_server)
    simulate_a_base_fee_change(page)
    page.goto(f"{live_server.base_url}/console/customers?search=globex")
    overview = page.goto(live_server.base_url + (page.get_attribute("#customer-rows a", "href") or ""))
    assert overview is not None and overview.status == 200, page.inner_text("main")
    assert "Usage this period" in page.inner_text("main")
    page.close()
