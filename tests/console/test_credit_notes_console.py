"""The invoice page's credit note form in-process: per line and by amount, through the review step
(the amount stated) to confirmation, a double confirm crediting once, the notes listed on the
invoice with what was credited, and a refusal beside the form with nothing written."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from billing.invoices.one_off import OneOffChargeRequest, create_one_off_charge
from customers.service import NewCustomer, create_customer
from tests.conftest import now
from tests.console.test_charges_console import hidden_fields
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def invoice(session: AsyncSession, catalog: None) -> str:
    """A 50.00 one-off invoice of Console Co; its number."""
    await create_user(session, email="fin@example.com", role="finance", password=PASSWORD, as_of=now())
    found = await create_customer(
        session,
        NewCustomer(external_id="org_console", name="Console Co", currency="USD", plan_key="pro"),
        as_of=now(),
    )
    request = OneOffChargeRequest(
        customer_id=found.id,
        description="Onboarding day",
        quantity=Decimal(1),
        unit_price=Decimal("50.00"),
        currency="USD",
        timing="now",
        idempotency_key="onboarding",
        actor="test",
    )
    outcome = await create_one_off_charge(session, request, as_of=now())
    assert outcome.invoice is not None
    number = f"INV-{outcome.invoice.number:06d}"
    await session.commit()
    return number


def credit_form(html: str, invoice: str) -> dict[str, str]:
    start = html.index(f'action="/console/invoices/{invoice}/credit-notes/review"')
    form = html[start : html.index("</form>", start)]
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form)
    assert key
    return {"csrftoken": csrf_of(html), "idempotency_key": key.group(1)}


async def notes(session: AsyncSession) -> list[tuple[int, str]]:
    rows = await session.execute(text("SELECT amount, method FROM credit_notes ORDER BY number"))
    return [(int(amount), method) for amount, method in rows]


async def test_a_credit_note_is_reviewed_with_its_amount_then_confirmed_once(
    client: httpx.AsyncClient, invoice: str, session: AsyncSession
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/invoices/{invoice}")
    assert "Nothing credited on this invoice." in page.text and "Review credit note" in page.text
    fields = credit_form(page.text, invoice)
    form = {
        "scope": "amount",
        "amount": "12.50",
        "reason": "PRODUCT_UNSATISFACTORY",
        "method": "CREDIT",
        "note": "slow",
    }
    review = await client.post(f"/console/invoices/{invoice}/credit-notes/review", data={**fields, **form})
    assert review.status_code == 200, review.text
    assert f"Credit 12.50 USD on invoice {invoice}?" in review.text
    assert "To the customer&#39;s credit balance" in review.text or "To the customer's credit balance" in review.text
    assert await notes(session) == [], "the review writes nothing"
    confirm = hidden_fields(review.text)
    first = await client.post(f"/console/invoices/{invoice}/credit-notes", data=confirm)
    again = await client.post(f"/console/invoices/{invoice}/credit-notes", data=confirm)
    assert first.status_code == again.status_code == 303
    assert await notes(session) == [(1250, "CREDIT")], "a double confirm credits once"
    shown = await client.get(first.headers["location"])
    assert "Credit note CN-000001: 12.50 USD credited." in shown.text
    assert '<strong class="credited-amount">12.50 USD</strong>' in shown.text
    assert "CN-000001" in shown.text and "product unsatisfactory: slow" in shown.text

    per_line = {"scope": "lines", "line_0": "30.00", "reason": "ORDER_CHANGE", "method": "REDUCE_DUE"}
    fields = credit_form(shown.text, invoice)
    review = await client.post(f"/console/invoices/{invoice}/credit-notes/review", data={**fields, **per_line})
    assert f"Credit 30.00 USD on invoice {invoice}?" in review.text
    await client.post(f"/console/invoices/{invoice}/credit-notes", data=hidden_fields(review.text))
    assert await notes(session) == [(1250, "CREDIT"), (3000, "REDUCE_DUE")]
    shown = await client.get(f"/console/invoices/{invoice}")
    assert '<strong class="still-due">20.00 USD</strong>' in shown.text, "50.00 due, 30.00 taken off"


async def test_a_refused_credit_note_is_shown_beside_the_form_and_writes_nothing(
    client: httpx.AsyncClient, invoice: str, session: AsyncSession
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/invoices/{invoice}")
    fields = credit_form(page.text, invoice)
    for form, message in (
        ({"scope": "amount", "amount": "50.01"}, "amount: is more than the invoice&#39;s lines have left to credit"),
        ({"scope": "amount", "amount": "-1"}, "amount: must be greater than zero"),
        ({"scope": "lines", "line_9": "1.00"}, "lines.0.position: invoice"),
        ({"scope": "amount", "amount": "1", "method": "REFUND"}, "method: invoice"),
    ):
        refused = await client.post(
            f"/console/invoices/{invoice}/credit-notes/review", data={**fields, "reason": "OTHER", **form}
        )
        assert refused.status_code == 422 and message in refused.text, (form, refused.text[-3000:])
    assert await notes(session) == []


async def test_each_credit_note_on_the_invoice_page_opens_its_pdf(
    client: httpx.AsyncClient, invoice: str, session: AsyncSession
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/invoices/{invoice}")
    form = {"scope": "amount", "amount": "5.00", "reason": "DUPLICATE", "method": "CREDIT"}
    review = await client.post(
        f"/console/invoices/{invoice}/credit-notes/review", data={**credit_form(page.text, invoice), **form}
    )
    done = await client.post(f"/console/invoices/{invoice}/credit-notes", data=hidden_fields(review.text))
    shown = await client.get(done.headers["location"])
    link = re.search(
        r'CN-000001 <a class="pdf-link" href="(/console/credit-notes/[0-9a-f-]{36}/pdf)">PDF</a>', shown.text
    )
    assert link is not None, shown.text
    pdf = await client.get(link.group(1))
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == 'inline; filename="CN-000001-en.pdf"'
    text_of = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Credit note" in text_of and "CN-000001" in text_of and invoice in text_of and "$5.00" in text_of
    for bad in (
        "/console/credit-notes/nope/pdf",
        f"/console/credit-notes/{'9' * 3000}/pdf",
        "/console/credit-notes/00000000-0000-0000-0000-000000000000/pdf",
    ):
        assert (await client.get(bad)).status_code == 404
