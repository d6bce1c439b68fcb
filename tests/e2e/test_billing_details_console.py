"""A customer's billing details on a real `tally serve`, in a real browser: support opens the
customer's Billing details tab, is refused a three-letter country beside the field (htmx swaps the
form back in), reviews the change (each field before and after), confirms it, and sees the details
and their history (screenshotted for a person to judge); then the customer's own token changes its
invoice language over GraphQL and is refused its tax exemption."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TALLY, LiveServer, catalog_server, graphql_data
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e

CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { id } userErrors { field code message } } }"""
UPDATE = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
  billingDetails { locale taxExemption } change { fields actor } userErrors { field code } } }"""
HISTORY = """query($id: ID!) { customer(id: $id) { billingDetailsHistory { fields actor } } }"""


@pytest.fixture(scope="module")
def details_server(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server of its own (the demo catalog, no demo customers): this journey changes a customer."""
    with catalog_server(server_url, tmp_path_factory, "tally_billing_details_live", "--no-jobs") as server:
        yield server


def test_support_edits_billing_details_in_the_console(details_server: LiveServer, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = details_server
    admin = server.cli("token", "create", "--role", "admin").strip()
    external_id = f"details-{uuid.uuid4().hex[:8]}"
    new = {"externalId": external_id, "name": "Hellas Robotics", "currency": "EUR", "email": "ap@hellas.test"}
    customer_id = graphql_data(server, admin, CREATE_CUSTOMER, {"input": new})["createCustomer"]["customer"]["id"]
    email, password = f"{external_id}@example.com", "a long enough passphrase"
    created = subprocess.run(
        [str(TALLY), "user", "create", "--email", email, "--role", "support", "--password-stdin"],
        input=password,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    page = signed_in_page(browser, LiveServer(server.base_url, email, password, server.env, server.database_url))
    page.goto(f"{server.base_url}/console/customers/{customer_id}")
    page.click("nav.tabs >> text=Billing details")
    page.wait_for_url("**/billing-details")
    expect(page.locator("#billing-recipients")).to_contain_text("ap@hellas.test")

    page.fill("input[name=legal_name]", "Hellas Robotics AE")
    page.fill("input[name=line1]", "Odos Ermou 12")
    page.fill("input[name=postal_code]", "105 63")
    page.fill("input[name=city]", "Athens")
    page.evaluate("document.querySelector('input[name=country]').removeAttribute('maxlength')")
    page.fill("input[name=country]", "GRC")
    page.fill("input[name=tax_id]", "el 094 259 216")
    page.select_option("select[name=locale]", "fr")
    page.fill("textarea[name=invoice_emails]", "billing@hellas.test\ncfo@hellas.test")
    page.evaluate("window.stillTheSamePage = true")
    page.click("#review-billing-details")
    expect(page.locator("#error-country")).to_contain_text("not an ISO 3166-1 alpha-2 country code")
    assert page.evaluate("window.stillTheSamePage === true"), "htmx swapped the form back in, errors beside fields"
    assert page.input_value("input[name=legal_name]") == "Hellas Robotics AE", "the form as it was filled"
    page.screenshot(path=str(tmp_path / "billing-details-refused.png"), full_page=True)

    page.fill("input[name=country]", "gr")
    page.click("#review-billing-details")
    page.wait_for_selector("#billing-details-review")
    review = page.inner_text("#billing-details-review")
    assert "EL094259216" in review and "GR" in review and "billing@hellas.test, cfo@hellas.test" in review
    page.screenshot(path=str(tmp_path / "billing-details-review.png"), full_page=True)
    history = graphql_data(server, admin, HISTORY, {"id": customer_id})["customer"]["billingDetailsHistory"]
    assert history == [], "a review changes nothing"

    page.click("#confirm-billing-details")
    page.wait_for_selector("#billing-details-notice")
    expect(page.locator("#addressee")).to_have_text("Hellas Robotics AE")
    expect(page.locator("#billing-address")).to_contain_text("105 63 Athens")
    expect(page.locator("#billing-tax-id")).to_have_text("EL094259216")
    expect(page.locator("#billing-locale")).to_contain_text("Français")
    expect(page.locator("#billing-details-history")).to_contain_text(email)
    page.screenshot(path=str(tmp_path / "billing-details.png"), full_page=True)
    page.close()

    own = server.cli("token", "create", "--role", "customer", "--customer", external_id).strip()
    changed = graphql_data(server, own, UPDATE, {"input": {"customerId": customer_id, "locale": "de"}})
    assert changed["updateCustomer"]["change"] == {"fields": ["locale"], "actor": None}
    refused = graphql_data(server, own, UPDATE, {"input": {"customerId": customer_id, "taxExemption": "EXEMPT"}})
    assert refused["updateCustomer"]["userErrors"] == [{"field": ["taxExemption"], "code": "FORBIDDEN"}]
    history = graphql_data(server, admin, HISTORY, {"id": customer_id})["customer"]["billingDetailsHistory"]
    assert [row["actor"].split(":")[0] for row in history] == ["token", "staff"]
