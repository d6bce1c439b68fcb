"""The overview, the invoices list, the plans page and a customer's ledger in a real browser over
the demo's data, each screenshotted at the desktop and the phone size for a person to judge."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, screenshot_both_sizes
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def page(browser, live_server: LiveServer):  # type: ignore[no-untyped-def]
    signed_in = signed_in_page(browser, live_server)
    yield signed_in
    signed_in.close()


def test_overview_shows_money_per_currency_and_what_needs_a_person(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.click("a.brand")
    page.wait_for_url("**/console/overview")
    expect(page.locator("#mrr tbody tr").first).to_contain_text("USD")
    expect(page.locator("#receivables")).to_be_visible()
    revenue = page.locator("section[aria-labelledby=revenue-title] svg")
    expect(revenue.first.locator("rect.bar")).to_have_count(12)
    expect(revenue.first.locator("title").first).to_contain_text("USD")
    expect(page.locator("section[aria-labelledby=usage-title] svg circle").first).to_be_attached()
    screenshot_both_sizes(page, "overview")
    page.click("text=Open anomalies >> xpath=.. >> a")
    page.wait_for_url("**/console/anomalies?status=OPEN")


def test_invoices_list_filtered_exported_and_opened(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.click("nav >> text=Invoices")
    page.wait_for_url("**/console/invoices")
    rows = page.locator("#invoice-list tbody tr")
    expect(rows.first.locator("a").first).to_have_text(re.compile(r"INV-\d{6}"))
    page.select_option("#invoice-filters select[name=status]", "issued")
    page.fill("#invoice-filters input[name=customer]", "org_acme")
    page.click("#invoice-filters button[type=submit]")
    page.wait_for_url("**/console/invoices?status=issued&customer=org_acme**")
    expect(rows.first).to_contain_text("Acme Robotics")
    expect(page.locator("#invoice-totals tbody tr").first).to_contain_text("USD")
    listed = rows.count()
    with page.expect_download() as download:
        page.click("text=Export CSV")
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(exported) == listed and {row["customer_external_id"] for row in exported} == {"org_acme"}
    screenshot_both_sizes(page, "invoices")
    number = rows.first.locator("a").first.inner_text()
    rows.first.locator("a").first.click()
    page.wait_for_url(f"**/console/invoices/{number}")
    expect(page.locator("main")).to_contain_text("Due")


def test_ledger_view_of_a_customer(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.base_url}/console/customers?search=org_acme")
    page.click("table >> text=org_acme")
    page.click('nav.tabs >> text="Ledger"')
    page.wait_for_url("**/ledger")
    statement = page.locator("#ledger-statement tbody tr")
    caused_by = statement.locator("td:nth-child(4) a")
    expect(caused_by.first).to_have_text(re.compile(r"INV-\d{6}"))
    balances = [row.locator("td").nth(6).inner_text() for row in statement.all()]
    assert balances and all(re.fullmatch(r"-?[\d,]+\.\d\d", balance) for balance in balances)
    screenshot_both_sizes(page, "ledger")
    page.click("nav.picker >> text=Credits USD")
    page.wait_for_url("**/ledger?account=credits&currency=USD")
    expect(page.locator("#ledger-statement")).to_contain_text("credit grant")
    caused_by.first.click()
    expect(page.locator("h1")).to_be_visible()


def test_plans_page_lists_versions_prices_and_customers(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.click("nav >> text=Plans")
    page.wait_for_url("**/console/plans")
    team = page.locator("#plan-team")
    expect(team.locator(".plan-version").first).to_contain_text("current")
    expect(team).to_contain_text("per month")
    subscribers = team.locator(".subscribers a")
    expect(subscribers.first).to_be_visible()
    screenshot_both_sizes(page, "plans")
    name = subscribers.first.inner_text()
    subscribers.first.click()
    expect(page.locator("h1")).to_have_text(name)


def test_charts_have_axes_units_and_tooltips(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.base_url}/console/customers?search=org_acme")
    page.click("table >> text=org_acme")
    expect(page.locator(".usage-card .quantity").first).to_be_visible()
    quantities = page.locator(".usage-card .quantity").all_inner_texts()
    assert any(re.match(r"\d{1,3}(,\d{3})+ ", quantity) for quantity in quantities), quantities
    usage = page.locator("#usage-chart svg.wide-chart")
    expect(usage.locator("text.unit")).to_have_text(re.compile(r"\w+"))
    expect(usage.locator("rect.bar title").first).to_contain_text("UTC:")
    expect(usage.locator("text.tick").first).to_have_text(re.compile(r"^[\d,.]+$"))
    screenshot_both_sizes(page, "customer-usage-chart")
    page.click("nav >> text=Metering")
    lags = page.locator("svg.chart").first
    expect(lags.locator("text.unit")).to_have_text(re.compile(r"^(milliseconds|seconds|minutes|hours)$"))
    screenshot_both_sizes(page, "metering-charts")


def test_a_phone_reads_the_figures_without_scrolling_sideways(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """At 390 px: the header leaves the screen to the page, a summary table's last figure (MRR
    now, still due) shows without scrolling, a chart's labels stay readable, and the pricing
    page fits."""
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(f"{live_server.base_url}/console/overview")
        assert page.locator("header.topbar").bounding_box()["height"] <= 100, "the sections sit on one row"
        mrr_now = page.locator("#mrr td.mrr-now").first
        expect(mrr_now).to_be_visible()
        assert mrr_now.bounding_box()["x"] + mrr_now.bounding_box()["width"] <= 390
        revenue = page.locator("section[aria-labelledby=revenue-title] svg.chart:visible")
        expect(revenue).to_have_count(1)
        label = revenue.locator("text.tick").first.bounding_box()
        assert label["height"] >= 10, f"a value label {label['height']:.1f} px high cannot be read"
        expect(revenue.locator("rect.bar")).to_have_count(12)
        page.goto(f"{live_server.base_url}/console/invoices?status=issued")
        for cell in ("Total", "Still due", "Due"):
            figure = page.locator(f"#invoice-list tbody tr >> nth=0 >> td[data-label='{cell}']")
            box = figure.bounding_box()
            assert box and box["x"] + box["width"] <= 390, cell
        still_due = page.locator("#invoice-totals td[data-label='Still due']").first
        assert still_due.bounding_box()["x"] + still_due.bounding_box()["width"] <= 390
        page.goto(f"{live_server.base_url}/console/customers/org_acme/invoices")
        amount_due = page.locator("#issued-invoices td[data-label='Amount due']").first.bounding_box()
        assert amount_due and amount_due["x"] + amount_due["width"] <= 390, "a customer's invoices too"
        page.goto(f"{live_server.base_url}/console/invoices?customer=org_acme&status=issued")
        page.locator("#invoice-list td[data-label='Number'] a").first.click()
        amount = page.locator(".invoice-lines td[data-label='Amount']").first
        expect(amount).to_be_visible()
        assert amount.bounding_box()["x"] + amount.bounding_box()["width"] <= 390, "an invoice line's amount"
        page.click("nav >> text=Pricing")
        page.wait_for_url("**/console/pricing")
        screenshot_both_sizes(page, "pricing")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
