"""A credit note's PDF: on a taxed invoice, its text (pypdf) equals the note's number, the invoice
it corrects, its credited lines, the tax it gives back and its total, formatted for the locale; it
is stored on first request and served byte for byte after; and its download is for staff and the
note's own customer only."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.dates import format_date
from babel.numbers import format_currency
from pypdf import PdfReader
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.documents.errors import UnknownLocale
from billing.documents.locales import LABELS
from billing.documents.service import credit_note_pdf
from billing.invoices import credit_notes_repository
from billing.invoices.credit_notes import CreditNoteRequest, create_credit_note
from customers.service import NewCustomer, create_customer
from ledger.money import to_major
from tests.billing.documents.support import FEB_28, SELLER, tiered_invoice
from tests.billing.documents.test_documents import NOW, in_order, pdf_text, spaced
from tests.billing.documents.test_full_invoice_document import FRENCH_VAT
from tests.conftest import graphql
from tests.e2e.test_invoice_documents import pdf_first_page_png

NOTE_TEXT = "Facturé deux fois en février"


async def credited_taxed_invoice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[Any, Any]:
    """Le Petit Atelier's February invoice (1,475.00 + TVA 20% 295.00 = 1,770.00) and a note of
    354.00 back to their credit balance: 59.00 of it tax, 295.00 of lines (55.00 + 240.00)."""
    invoice = await tiered_invoice(session, sessions, settings, more_catalog=FRENCH_VAT)
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (147500, 29500, 177000)
    outcome = await create_credit_note(
        session,
        CreditNoteRequest(
            invoice.id, "CREDIT", "duplicate", "cn-pdf", "staff:test", note=NOTE_TEXT, amount=Decimal("354.00")
        ),
        as_of=FEB_28 + timedelta(days=3),
    )
    await session.commit()
    assert (outcome.note.amount, outcome.note.tax_amount) == (35400, 5900)
    return invoice, outcome.note


@pytest.mark.parametrize("locale", ["en", "fr"])
async def test_the_pdf_of_a_credit_note_on_a_taxed_invoice_says_what_the_note_holds(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, locale: str, tmp_path: Path
) -> None:
    invoice, note = await credited_taxed_invoice(session, sessions, settings)
    lines = (await credit_notes_repository.lines_of_notes(session, [note.id]))[note.id]
    assert [line.amount for line in lines] == [5500, 24000]
    found = await credit_note_pdf(session, note.id, seller=SELLER, as_of=NOW, locale=locale)
    await session.commit()
    pdf_first_page_png(found.pdf, tmp_path / f"credit-note-{locale}.png")  # to look at
    shown = pdf_text(found.pdf)

    def money(minor: int) -> str:
        return spaced(format_currency(to_major(minor, "EUR"), "EUR", locale=locale))

    def day(moment: datetime) -> str:
        return spaced(format_date(moment.date(), format="medium", locale=locale))

    labels = LABELS[locale]
    assert found.number == "CN-000001" and found.locale == locale
    in_order(
        shown,
        [
            labels["credit_note"],
            f"{labels['credit_note_number']} CN-000001",
            f"{labels['credit_note_date']} {day(note.issued_at)}",
            f"{labels['corrected_invoice']} INV-{invoice.number:06d}",
            f"{labels['invoice_date']} {day(invoice.issued_at)}",
            "Tally Billing SAS",
            "Le Petit Atelier SARL",
            "FR12345678901",
            f"{labels['reason']} {labels['reason_duplicate']}: {NOTE_TEXT}",
            f"{labels['settlement']} {labels['settled_credit']}",
            f"{lines[0].description} {money(5500)}",
            f"{lines[1].description} {money(24000)}",
            f"{labels['net_credited']} {money(29500)}",
            f"{labels['tax_given_back']} · TVA",
            money(5900),
            f"{labels['total_credited']} {money(35400)}",
        ],
    )
    assert "−" not in shown and "-" + money(35400) not in shown  # amounts given back, not negatives


async def test_the_pdf_is_stored_once_and_served_byte_for_byte(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, note = await credited_taxed_invoice(session, sessions, settings)
    note_id, issued_at = note.id, note.issued_at

    async def request() -> bytes:
        async with sessions() as own:
            found = await credit_note_pdf(own, note_id, seller=SELLER, as_of=NOW)
            await own.commit()
            return found.pdf

    results = await asyncio.gather(*(request() for _ in range(3)))
    assert len(set(results)) == 1
    assert PdfReader(io.BytesIO(results[0])).metadata.creation_date == issued_at
    # Served from storage afterwards, whatever the seller's details have become since.
    again = await credit_note_pdf(session, note_id, seller=SELLER.__class__(legal_name="Renamed"), as_of=NOW)
    assert again.pdf == results[0] and again.locale == "fr"  # the buyer's locale by default
    stored = await session.execute(text("SELECT count(*) FROM credit_note_documents"))
    assert stored.scalar_one() == 1
    with pytest.raises(DBAPIError, match="immutable"):
        await session.execute(text("UPDATE credit_note_documents SET pdf = 'x'"))
    await session.rollback()
    with pytest.raises(UnknownLocale):
        await credit_note_pdf(session, note_id, seller=SELLER, as_of=NOW, locale="xx" * 10_000)


async def test_the_pdf_download_is_for_staff_and_the_note_s_own_customer(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    token_for,
) -> None:
    invoice, note = await credited_taxed_invoice(session, sessions, settings)
    path = f"/v1/credit-notes/{note.id}/pdf"
    answer = await graphql(
        client,
        await token_for("viewer"),
        "query($n: String!) { invoice(number: $n) { creditNotes { number pdfUrl } } }",
        {"n": f"INV-{invoice.number:06d}"},
    )
    assert answer.json()["data"]["invoice"]["creditNotes"] == [{"number": "CN-000001", "pdfUrl": path}]
    assert (await client.get(path)).status_code == 401
    staff = {"Authorization": f"Bearer {await token_for('viewer')}"}
    first = await client.get(path, headers=staff)
    assert first.status_code == 200 and first.headers["content-type"] == "application/pdf"
    assert 'filename="CN-000001-fr.pdf"' in first.headers["content-disposition"]
    assert "Avoir" in pdf_text(first.content)
    own = {"Authorization": f"Bearer {await token_for('customer', 'atelier')}"}
    again = await client.get(path, headers=own)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    english = await client.get(path + "?locale=en", headers=own)
    assert english.status_code == 200 and "Credit note" in pdf_text(english.content)
    await create_customer(
        session, NewCustomer(external_id="other", name="Other", currency="EUR"), as_of=datetime.now(UTC)
    )
    await session.commit()
    other = {"Authorization": f"Bearer {await token_for('customer', 'other')}"}
    refused = await client.get(path, headers=other)
    assert refused.status_code == 404 and refused.json()["code"] == "NOT_FOUND"
    for bad in (
        f"/v1/credit-notes/{uuid.uuid4()}/pdf",
        "/v1/credit-notes/nope/pdf",
        f"/v1/credit-notes/{'9' * 5000}/pdf",
        f"/v1/credit-notes/{invoice.id}/pdf",  # an invoice's id is no credit note
    ):
        answer = await client.get(bad, headers=staff)
        assert answer.status_code in (404, 414), answer.text[:200]
    for locale in ("zz", "k" * 5000, "%00"):
        refused = await client.get(path, headers=staff, params={"locale": locale})
        assert refused.status_code == 422 and refused.json()["code"] == "UNKNOWN_LOCALE"
        assert len(refused.text) < 500
    stored = await session.execute(text("SELECT locale FROM credit_note_documents ORDER BY locale"))
    assert stored.scalars().all() == ["en", "fr"]
