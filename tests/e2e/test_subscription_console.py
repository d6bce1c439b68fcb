"""The console's subscription pages in a real browser, against the running server with the demo
loaded: the review of a cancel (the final invoice's amounts, swapped in by htmx) and of a
customer's own price (its effect on the period so far), each screenshotted for a person to judge.
Only reviews: the shared server's customers are left as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def open_customer(page, search: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("input[type=search]", search)
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.click("#customer-rows a")
    page.wait_for_selector("h1")


def test_reviews_of_a_cancel_and_of_a_customers_own_price_show_the_amounts_first(
    live_server: LiveServer, browser, tmp_path: Path
) -> None:
    page = signed_in_page(browser, live_server)
    open_customer(page, "globex")
    customer_url = page.url

    page.click("#subscription-lifecycle")
    page.wait_for_selector("#lifecycle-forms")
    expect(page.locator("#subscription-status")).to_have_text("ACTIVE")
    page.check("input[name=timing][value=IMMEDIATELY]")
    page.fill("input[name=reason]", "moving to another vendor")
    lifecycle_url = page.url
    page.click("#preview-cancel")
    page.wait_for_selector("#lifecycle-preview")
    assert page.url == lifecycle_url, "htmx swapped the review in; no navigation"
    assert "USD" in page.inner_text("#final-total"), "the final invoice's total, before confirming"
    assert page.locator("#confirm-cancel").is_visible()
    page.screenshot(path=str(tmp_path / "cancel-review.png"), full_page=True)

    page.goto(customer_url)
    page.click("text=Prices: the plan's and this customer's")
    page.wait_for_selector("#price-override-form")
    page.select_option("select[name=charge_id]", index=1)  # Pro's per-unit tokens of large-1
    page.fill("input[name=unit_price]", "0.000002")
    page.fill("input[name=reason]", "pilot pricing agreed by sales")
    page.click("#price-override-form button[type=submit]")
    page.wait_for_selector("#price-override-review")
    effect = page.inner_text("#override-effect")
    assert "USD" in effect, "the charge before and after, in money"
    assert page.locator("#override-from-now").is_visible(), "why a price from now on leaves the period so far"
    page.screenshot(path=str(tmp_path / "price-override-review.png"), full_page=True)

    page.goto(customer_url)
    expect(page.locator("#subscription-lifecycle")).to_be_visible()
    page.click("#subscription-lifecycle")
    expect(page.locator("#subscription-status")).to_have_text("ACTIVE", timeout=10_000)
    page.close()
