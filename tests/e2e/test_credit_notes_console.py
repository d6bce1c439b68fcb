"""A credit note in a real browser, against the running server with the demo loaded: the invoice
page's Credit note form, its review step stating the amount, the confirmation, and the note listed
on the invoice with what was credited and its PDF; screenshots of the form, the review, the result
and the PDF's first page."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page
from tests.e2e.test_invoice_documents import pdf_first_page_png

pytestmark = pytest.mark.e2e


def test_browser_journey_a_credit_note_reviewed_and_confirmed(live_server: LiveServer, browser, tmp_path: Path) -> None:
    shots = Path(os.environ.get("TALLY_SCREENSHOTS", str(tmp_path)))
    page = signed_in_page(browser, live_server)
    page.fill("input[type=search]", "initech")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.click("#customer-rows a")
    page.click("nav.tabs >> text=Invoices")
    page.wait_for_url("**/invoices")
    page.locator("#invoice-rows a").first.click()
    page.wait_for_selector("h1:has-text('Invoice')")
    assert "Nothing credited on this invoice." in page.inner_text("#credit-notes")
    page.fill(".credit-note-form input[name=amount]", "1.00")
    page.select_option(".credit-note-form select[name=reason]", "DUPLICATE")
    page.fill(".credit-note-form input[name=note]", "charged twice for the same day")
    page.screenshot(path=str(shots / "credit-note-form.png"), full_page=True)
    page.click(".credit-note-form button[type=submit]")
    page.wait_for_selector("h1:has-text('Credit 1.00')")
    assert "1.00" in page.inner_text(".credit-amount")
    page.screenshot(path=str(shots / "credit-note-review.png"), full_page=True)
    page.click("button:has-text('Confirm')")
    page.wait_for_selector(".notice")
    assert "credited" in page.inner_text(".notice")
    assert "CN-" in page.inner_text("#credit-notes") and "duplicate: charged twice" in page.inner_text("#credit-notes")
    assert page.inner_text(".credited-amount").startswith("1.00")
    page.screenshot(path=str(shots / "credit-note-done.png"), full_page=True)
    pdf_href = page.get_attribute("#credit-notes a.pdf-link", "href")
    assert pdf_href is not None and pdf_href.startswith("/console/credit-notes/")
    pdf = page.request.get(f"{live_server.base_url}{pdf_href}")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    assert "CN-" in text and "charged twice for the same day" in text
    pdf_first_page_png(pdf.body(), shots / "credit-note-pdf.png")
