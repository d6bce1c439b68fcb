"""Invoice documents: the PDF says what the invoice says, in the customer's language, and the
same bytes are served every time."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from pypdf import PdfReader
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.documents.document import build_document
from billing.documents.errors import UnknownLocale
from billing.documents.locales import LABELS
from billing.documents.render import TEMPLATES, render_pdf
from billing.documents.service import invoice_pdf
from billing.invoices import repository as billing_repository
from billing.invoices import service as billing
from billing.models import CREDIT_NOTE_METHODS, CREDIT_NOTE_REASONS
from customers.billing_details import SUPPORTED_LOCALES
from ledger.money import to_major
from tests.billing.documents.support import FEB_28, SELLER, tiered_invoice

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text with every kind of space (Babel's narrow no-break ones too) made one space."""
    raw = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return re.sub(r"[\s\u00a0\u202f]+", " ", raw)


def spaced(value: str) -> str:
    return re.sub(r"[\s\u00a0\u202f]+", " ", value)


def in_order(haystack: str, needles: list[str]) -> None:
    """Each needle appears after the one before it (the document's reading order)."""
    at = 0
    for needle in needles:
        found = haystack.find(needle, at)
        assert found >= 0, f"{needle!r} not found after position {at} in {haystack[at : at + 300]!r}"
        at = found + len(needle)


@pytest.mark.parametrize("locale", ["en", "fr", "de"])
async def test_the_pdf_shows_the_invoice_lines_tiers_and_totals_formatted_for_the_locale(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, locale: str
) -> None:
    invoice = await tiered_invoice(session, sessions, settings)
    lines = (await billing.lines_of(session, [invoice.id]))[invoice.id]
    found = await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW, locale=locale)
    await session.commit()
    shown = pdf_text(found.pdf)

    def money(minor: int) -> str:
        return spaced(format_currency(to_major(minor, "EUR"), "EUR", locale=locale))

    def price(value: Decimal) -> str:
        return spaced(format_currency(value, "EUR", locale=locale, decimal_quantization=False))

    def number(value: Decimal) -> str:
        return spaced(format_decimal(value, locale=locale))

    labels = LABELS[locale]
    usage, base_fee = lines
    assert usage.kind == "usage" and usage.quantity == 4500 and usage.amount == 27500
    assert base_fee.kind == "base_fee" and base_fee.amount == 120000
    assert invoice.total == 147500 and invoice.amount_due == 147500
    in_order(
        shown,
        [
            labels["invoice"],
            "INV-",
            spaced(format_date(FEB_28.date(), format="medium", locale=locale)),  # issued
            spaced(format_date((FEB_28 + timedelta(days=14)).date(), format="medium", locale=locale)),  # due
            "Tally Billing SAS",
            "FR40303265045",
            "Le Petit Atelier SARL",
            "3 place Bellecour",
            "69002 Lyon",
            "FR12345678901",
            usage.description,
            number(Decimal(4500)),
            money(27500),
            labels["allowance_used"],
            number(Decimal(1000)),
            f"{labels['tier']} 1 {number(Decimal(2000))} {price(Decimal('0.10'))} {price(Decimal('200.00'))}",
            f"{labels['tier']} 2 {number(Decimal(1500))} {price(Decimal('0.05'))} {price(Decimal('75.00'))}",
            base_fee.description,
            f"1 {price(Decimal('1200.00'))} {money(120000)}",
            f"{labels['subtotal']} {money(147500)}",
            f"{labels['total']} {money(147500)}",
            f"{labels['amount_due']} {money(147500)}",
        ],
    )
    # Nothing fills these sections yet: they are not shown at all.
    for empty in ("discounts", "credit_note", "credits_applied"):
        assert labels[empty] not in shown


async def test_french_amounts_read_as_a_french_customer_expects(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """The customer's locale (fr) is the default; spelled out once by hand, not by Babel."""
    invoice = await tiered_invoice(session, sessions, settings)
    found = await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW)
    shown = pdf_text(found.pdf)
    assert found.locale == "fr"
    in_order(
        shown, ["Facture", "28 févr. 2026", "14 mars 2026", "Palier 1 2 000 0,10 € 200,00 €", "Montant dû 1 475,00 €"]
    )


async def test_rendering_again_gives_the_same_bytes_and_the_stored_pdf_is_served(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await tiered_invoice(session, sessions, settings)
    document = await build_document(session, invoice.id, seller=SELLER, locale="en")
    assert render_pdf(document) == render_pdf(document)
    first = await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW, locale="en")
    await session.commit()
    assert first.pdf == render_pdf(document)
    assert PdfReader(io.BytesIO(first.pdf)).metadata.creation_date == invoice.issued_at
    # Served from storage afterwards, whatever the seller's details have become since.
    again = await invoice_pdf(
        session, invoice.id, seller=SELLER.__class__(legal_name="Renamed"), as_of=NOW, locale="en"
    )
    assert again.pdf == first.pdf and again.sha256 == first.sha256
    stored = await session.execute(text("SELECT count(*), min(sha256) FROM invoice_documents"))
    assert tuple(stored.one()) == (1, first.sha256)


async def test_concurrent_first_requests_store_one_document(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await tiered_invoice(session, sessions, settings)

    async def request() -> bytes:
        async with sessions() as own:
            found = await invoice_pdf(own, invoice.id, seller=SELLER, as_of=NOW, locale="de")
            await own.commit()
            return found.pdf

    results = await asyncio.gather(*(request() for _ in range(4)))
    assert len(set(results)) == 1
    stored = await session.execute(text("SELECT count(*) FROM invoice_documents WHERE locale = 'de'"))
    assert stored.scalar_one() == 1


async def test_the_buyer_is_shown_as_invoiced_and_old_invoices_show_the_current_details(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await tiered_invoice(session, sessions, settings)
    await session.execute(text("UPDATE customers SET legal_name = 'Atelier Moved SAS', city = 'Nantes'"))
    await session.commit()
    issued = await build_document(session, invoice.id, seller=SELLER)
    assert issued.buyer.addressee == "Le Petit Atelier SARL" and "69002 Lyon" in issued.buyer.address_lines
    # As an invoice issued before migration 0027 stands (issued invoices refuse changes: the test
    # steps around that trigger).
    await session.execute(text("SET LOCAL session_replication_role = replica"))
    await session.execute(text("UPDATE invoices SET billing_details = NULL, due_at = NULL"))
    await session.commit()
    session.expunge_all()
    old = await build_document(session, invoice.id, seller=SELLER)
    assert old.buyer.addressee == "Atelier Moved SAS" and "69002 Nantes" in old.buyer.address_lines
    assert old.due_at == old.issued_at  # no payment terms were kept: due on issue


@pytest.mark.parametrize("locale", ["xx", "EN", "", "fr_FR", "en" * 5000, "../../etc/passwd"])
async def test_an_unknown_locale_is_a_field_error_and_nothing_is_stored(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, locale: str
) -> None:
    invoice = await tiered_invoice(session, sessions, settings)
    with pytest.raises(UnknownLocale) as refused:
        await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW, locale=locale)
    assert (refused.value.code, refused.value.field) == ("UNKNOWN_LOCALE", "locale")
    assert len(refused.value.message) < 200
    await session.rollback()
    stored = await session.execute(text("SELECT count(*) FROM invoice_documents"))
    assert stored.scalar_one() == 0


def test_every_label_exists_in_every_locale_and_the_template_uses_no_other() -> None:
    assert set(LABELS) == set(SUPPORTED_LOCALES)
    keys = set(LABELS["en"])
    for locale, labels in LABELS.items():
        assert set(labels) == keys, f"{locale}: missing {keys - set(labels)}, extra {set(labels) - keys}"
        assert all(value.strip() for value in labels.values()), locale
    for template in ("invoice.html", "credit_note.html", "_parties.html"):
        used = set(re.findall(r"\bt\.([a-z_]+)", (TEMPLATES / template).read_text()))
        assert used and used <= keys, (template, used - keys)
    assert {f"status_{status}" for status in ("issued", "paid", "void", "uncollectible")} <= keys
    assert {f"reason_{reason}" for reason in CREDIT_NOTE_REASONS} <= keys
    assert {f"settled_{method.lower()}" for method in CREDIT_NOTE_METHODS} <= keys


async def test_a_paid_invoice_gets_a_document_that_says_paid_and_the_first_one_is_kept(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """The stored PDF is kept per payment status: the one sent at issue still says it awaited
    payment, a download after payment says paid (lines and totals identical)."""
    invoice = await tiered_invoice(session, sessions, settings)
    issued = await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW, locale="en")
    await session.commit()
    await billing_repository.mark_paid(session, invoice.id)
    await session.commit()
    async with sessions() as request:  # a later download, in a request of its own
        paid = await invoice_pdf(request, invoice.id, seller=SELLER, as_of=NOW, locale="en")
        await request.commit()
    labels = LABELS["en"]
    assert labels["status_issued"] in pdf_text(issued.pdf) and labels["status_paid"] not in pdf_text(issued.pdf)
    assert labels["status_paid"] in pdf_text(paid.pdf)
    assert paid.sha256 != issued.sha256
    stored = await session.execute(text("SELECT status FROM invoice_documents ORDER BY status"))
    assert [row[0] for row in stored] == ["issued", "paid"]
