"""Coupons in a real browser against the running server: a coupon created on the Promotions page,
applied to a new customer from their Discounts tab after a review showing the upcoming invoice
with the discount line, each step screenshotted for a person to judge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, graphql_data
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def test_a_coupon_created_then_applied_after_reviewing_the_upcoming_invoice(
    live_server: LiveServer, browser, tmp_path: Path
) -> None:
    finance = live_server.cli("token", "create", "--role", "finance").strip()
    suffix = uuid.uuid4().hex[:6]
    created = graphql_data(
        live_server,
        finance,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {
            "i": {
                "externalId": f"org_coupon_{suffix}",
                "name": "Coupon Co",
                "currency": "USD",
                "planKey": "pro",
                "startedAt": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
            }
        },
    )["createCustomer"]
    customer_id = created["customer"]["id"]
    code = f"SPRING{suffix}".upper()

    page = signed_in_page(browser, live_server)
    page.click("nav >> text=Promotions")
    page.wait_for_selector("#new-coupon")
    page.fill("#new-coupon input[name=code]", code)
    page.fill("#new-coupon input[name=name]", "Spring offer")
    page.fill("#new-coupon input[name=off]", "101")
    page.click("#new-coupon button[type=submit]")
    expect(page.locator("#new-coupon .field-error")).to_contain_text("at most 100")
    page.fill("#new-coupon input[name=off]", "15")
    page.select_option("#new-coupon select[name=duration]", "repeating")
    page.fill("#new-coupon input[name=duration_periods]", "3")
    page.fill("#new-coupon input[name=max_redemptions]", "100")
    page.click("#new-coupon button[type=submit]")
    row = page.locator(f"#coupon-{code}")
    expect(row).to_contain_text("15% off")
    expect(row).to_contain_text("0 / 100")
    page.screenshot(path=str(tmp_path / "coupons.png"), full_page=True)

    page.goto(f"{live_server.base_url}/console/customers/{customer_id}/discounts")
    expect(page.locator("#discounts")).to_contain_text("No discounts.")
    page.fill("#apply-coupon input[name=code]", code.lower())
    page.click("#apply-coupon button[type=submit]")
    page.wait_for_selector("#discount-review")
    discount_line = page.locator("#review-upcoming .discount-line")
    expect(discount_line).to_contain_text(f"Discount {code}: Spring offer, 15% off (1 of 3)")
    expect(discount_line).to_contain_text("-3.00 USD")  # 15% of Pro's next base fee, 20.00
    page.screenshot(path=str(tmp_path / "discount-review.png"), full_page=True)
    page.click("#discount-review button[type=submit]")
    expect(page.locator(f"#discount-{code}")).to_contain_text("3")
    expect(page.locator(".notice")).to_contain_text(f"Coupon {code} applied")
    page.screenshot(path=str(tmp_path / "discounts-tab.png"), full_page=True)
    page.close()
