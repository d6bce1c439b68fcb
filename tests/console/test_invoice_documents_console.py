"""The console's invoice page: "PDF" opens the stored document, "Copy customer link" makes a
signed link (absurd expiries refused beside the field, nothing made)."""

from __future__ import annotations

import re

import httpx

from tests.console.test_billing_console import billed, invoice_numbers
from tests.console.test_console import PASSWORD, csrf_of, sign_in

__all__ = ["billed"]


async def test_staff_open_the_pdf_and_make_a_customer_link(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "ro@example.com", PASSWORD)
    number = invoice_numbers((await client.get(f"/console/customers/{billed}/invoices")).text)[0]
    page = await client.get(f"/console/invoices/{number}")
    assert f'href="/console/invoices/{number}/pdf"' in page.text and "Copy customer link" in page.text
    pdf = await client.get(f"/console/invoices/{number}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert (await client.get("/console/invoices/INV-999999/pdf")).status_code == 404

    token = csrf_of(page.text)
    made = await client.post(f"/console/invoices/{number}/link", data={"csrftoken": token, "expires_in_days": "7"})
    assert made.status_code == 200
    link = re.search(r'id="customer-link" class="copy-link" type="text" readonly size="90" value="([^"]+)"', made.text)
    assert link is not None and link.group(1).startswith("http://tally.test/i/")
    assert 'name="expires_in_days" type="number" min="1" max="365" inputmode="numeric" value="7"' in made.text
    hosted = await client.get(link.group(1).removeprefix("http://tally.test"))
    assert hosted.status_code == 200 and number in hosted.text

    for absurd in ("0", "366", "99999999999999999999", "abc", "-5", "1e9"):
        refused = await client.post(
            f"/console/invoices/{number}/link", data={"csrftoken": token, "expires_in_days": absurd}
        )
        assert refused.status_code == 422, absurd
        assert "a link lasts 1 to 365 days" in refused.text and 'id="customer-link"' not in refused.text
