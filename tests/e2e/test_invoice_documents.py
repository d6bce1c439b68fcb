"""Invoice documents in a real browser against the running server with the demo loaded: staff
open an invoice's PDF from the console and copy the customer's link; the customer opens that
link signed out. Both the hosted page and the PDF's first page are kept as screenshots."""

from __future__ import annotations

import io
from pathlib import Path

import pypdfium2
import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from tests.e2e.conftest import LiveServer
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def pdf_first_page_png(pdf: bytes, path: Path) -> None:
    document = pypdfium2.PdfDocument(pdf)
    document[0].render(scale=1.5).to_pil().save(path)
    document.close()


def test_staff_share_an_invoice_and_the_customer_opens_it_signed_out(
    live_server: LiveServer, browser, tmp_path: Path
) -> None:
    page = signed_in_page(browser, live_server)
    page.goto(f"{live_server.base_url}/console/customers")
    page.fill("input[type=search]", "hooli")
    expect(page.locator("#customer-rows tr")).to_have_count(1, timeout=30_000)
    page.locator("#customer-rows a").first.click()
    page.click("nav.tabs >> text=Invoices")
    page.wait_for_url("**/invoices")
    number = page.locator("#invoice-rows a").first.inner_text()
    page.locator("#invoice-rows a").first.click()
    page.wait_for_selector(f"h1:has-text('Invoice {number}')")

    pdf_href = page.get_attribute("a:has-text('PDF')", "href")
    assert pdf_href is not None
    pdf = page.request.get(f"{live_server.base_url}{pdf_href}")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    assert number in text and "Amount due" in text
    pdf_first_page_png(pdf.body(), tmp_path / "invoice-pdf-page-1.png")

    page.fill("input[name=expires_in_days]", "7")
    page.click("button:has-text('Copy customer link')")
    link = page.input_value("#customer-link")
    assert link.startswith(f"{live_server.base_url}/i/")
    assert "valid until" in page.inner_text(".invoice-documents")
    page.screenshot(path=str(tmp_path / "console-invoice-link.png"))

    customer = browser.new_context(viewport={"width": 1000, "height": 1100})  # no console session
    hosted = customer.new_page()
    answer = hosted.goto(link)
    assert answer is not None and answer.status == 200
    hosted.screenshot(path=str(tmp_path / "hosted-invoice.png"), full_page=True)
    assert hosted.locator("h1").inner_text() == "Invoice"
    body = hosted.inner_text("body")
    assert number in body and "Hooli" in body and "Amount due" in body
    assert hosted.locator("#pay").count() == 0, "collection is off: no pay button"
    downloaded = hosted.request.get(f"{link}/pdf")
    assert downloaded.status == 200 and downloaded.body() == pdf.body(), "one stored document for everyone"

    tampered = hosted.goto(link[:-3] + "xyz")
    assert tampered is not None and tampered.status == 404
    assert "INVOICE_LINK_INVALID" in hosted.inner_text("body")
    customer.close()
