"""Money actions in a real browser on a real `tally serve`: a viewer sees no action; support's
grant review refuses "ten dollars" and more than its limit beside the amount, and its credit
purchase refuses "ten" likewise; an admin reviews a large grant stated in words, then voids it
after a review; a promotion is edited and deactivated; `tally credits grant` and `void` do the
same from the CLI; and the Audit log page lists each action with who took it. Every new page is
screenshotted at the desktop and the phone size for a person to judge."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TALLY, LiveServer, catalog_server, graphql_data, screenshot_both_sizes
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e

CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { id } userErrors { field code message } } }"""
PASSWORD = "a long enough passphrase"


@pytest.fixture(scope="module")
def money_server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own (the demo catalog, no demo customers), with a console user per role."""
    with catalog_server(server_url, tmp_path_factory, "tally_money_live", "--no-jobs") as server:
        for role in ("admin", "support", "viewer"):
            created = subprocess.run(
                [str(TALLY), "user", "create", "--email", f"{role}@money.test", "--role", role, "--password-stdin"],
                input=PASSWORD,
                env=server.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert created.returncode == 0, created.stderr
        yield server


def as_role(server: LiveServer, role: str) -> LiveServer:
    return LiveServer(server.base_url, f"{role}@money.test", PASSWORD, server.env, server.database_url)


def test_money_actions_by_role_with_reviews_voids_promotions_and_the_audit_log(
    money_server: LiveServer, browser
) -> None:  # type: ignore[no-untyped-def]
    server = money_server
    token = server.cli("token", "create", "--role", "admin").strip()
    new = {"externalId": f"org_money_{uuid.uuid4().hex[:6]}", "name": "Money Bags Ltd", "currency": "USD"}
    customer_id = graphql_data(server, token, CREATE_CUSTOMER, {"input": new})["createCustomer"]["customer"]["id"]
    credits = f"{server.base_url}/console/customers/{customer_id}/credits"

    viewer = signed_in_page(browser, as_role(server, "viewer"))
    viewer.goto(credits)
    expect(viewer.locator("#credit-grants")).to_be_visible()
    expect(viewer.locator("#grant-credits")).to_have_count(0)
    expect(viewer.locator("#redeem-promotion")).to_have_count(0)
    expect(viewer.locator("#buy-credits")).to_have_count(0)
    screenshot_both_sizes(viewer, "money-viewer-credits")
    viewer.close()

    support = signed_in_page(browser, as_role(server, "support"))
    support.goto(credits)
    grant = support.locator("#grant-credits")
    grant.locator("input[name=reason]").fill("outage apology")
    for amount, refusal in (("ten dollars", "is not a decimal number"), ("150", "may grant at most 100.00 USD")):
        support.locator("#grant-credits input[name=amount]").fill(amount)
        support.locator("#grant-credits button[type=submit]").click()
        expect(support.locator("#grant-credits .field-error")).to_contain_text(refusal)
        assert support.input_value("#grant-credits input[name=amount]") == amount, "the form as it was filled"
    screenshot_both_sizes(support, "money-grant-review-refused")
    support.locator("#buy-credits input[name=amount]").fill("ten")
    support.locator("#buy-credits button[type=submit]").click()
    expect(support.locator("#buy-credits .field-error")).to_contain_text("is not a decimal number")
    assert support.input_value("#buy-credits input[name=amount]") == "ten", "the purchase form as it was filled"
    screenshot_both_sizes(support, "money-purchase-review-refused")
    support.close()

    admin = signed_in_page(browser, as_role(server, "admin"))
    admin.goto(credits)
    admin.locator("#grant-credits input[name=amount]").fill("150000")
    admin.locator("#grant-credits input[name=reason]").fill("enterprise prepayment")
    admin.locator("#grant-credits button[type=submit]").click()
    review = admin.locator("#grant-review")
    expect(review).to_contain_text("Grant 150,000.00 USD to Money Bags Ltd?")
    expect(review.locator(".amount-in-words")).to_contain_text("one hundred and fifty thousand US dollars")
    screenshot_both_sizes(admin, "money-grant-review-large")
    review.locator("button[type=submit]").click()
    expect(admin.locator(".notice")).to_contain_text("Granted 150,000.00 USD")

    row = admin.locator("#credit-grants tbody tr").first
    row.locator("summary").click()
    row.locator("input[name=reason]").fill("granted to the wrong customer")
    row.locator("button[type=submit]").click()
    void = admin.locator("#void-review")
    expect(void).to_contain_text("150,000.00 USD that remains of it is taken back")
    screenshot_both_sizes(admin, "money-void-review")
    void.locator("button[type=submit]").click()
    expect(admin.locator(".notice")).to_contain_text("Voided the grant: 150,000.00 USD taken back")
    expect(admin.locator("#credit-grants tbody tr").first).to_contain_text("voided")
    screenshot_both_sizes(admin, "money-credits-after-void")

    granted = json.loads(
        server.cli("credits", "grant", new["externalId"], "12.50", "--reason", "cli goodwill", "--json")
    )
    assert (granted["amount"], granted["currency"]) == ("12.50", "USD")
    assert "took back 12.50 USD" in server.cli("credits", "void", granted["grantId"], "--reason", "cli mistake")

    admin.goto(f"{server.base_url}/console/promotions")
    admin.fill("input[name=code]", "WINTER")
    admin.fill("input[name=description]", "Winter credit")
    admin.fill("input[name=credit_amount]", "20")
    admin.click("text=Create promotion")
    admin.click("[aria-label='Edit WINTER']")
    admin.fill("#edit-promotion input[name=max_redemptions]", "0")
    admin.click("#edit-promotion button[type=submit]")
    expect(admin.locator("#edit-promotion .field-error")).to_contain_text("must be at least 1")
    screenshot_both_sizes(admin, "money-promotion-edit")
    admin.fill("#edit-promotion input[name=max_redemptions]", "100")
    admin.click("#edit-promotion button[type=submit]")
    expect(admin.locator(".notice")).to_contain_text("Saved promotion WINTER")
    admin.click("[aria-label='Edit WINTER']")
    admin.click("#promotion-state button[type=submit]")
    expect(admin.locator(".notice")).to_contain_text("WINTER is deactivated")

    admin.click("nav >> text=Audit log")
    admin.wait_for_url("**/console/audit")
    rows = admin.locator("#audit-results tbody tr")
    expect(rows).to_have_count(8)  # customer; grant, void (console and CLI); promotion created, edited, deactivated
    expect(rows.first).to_contain_text("promotion.deactivate")
    screenshot_both_sizes(admin, "money-audit-log")
    admin.select_option("select[name=action]", "credits.")
    admin.click("form.filters button[type=submit]")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("credits.void")
    expect(rows.first).to_contain_text("cli")
    expect(rows.nth(2)).to_contain_text("active → voided")
    expect(rows.nth(2)).to_contain_text("staff:admin@money.test")
    admin.close()
