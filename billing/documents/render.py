"""Render an invoice document: the one Jinja2 template to HTML (the hosted page) and, through
WeasyPrint, to PDF; and a credit note's PDF, from its own template sharing the invoice's look.

The PDF is deterministic: its creation and modification dates are the document's issue date (from
the template's ``dcterms`` metadata), WeasyPrint's file identifier is derived from the content, and
the embedded font subsets carry a fixed timestamp (fontTools, which subsets them when HarfBuzz's
subsetter is absent, stamps "now" unless ``SOURCE_DATE_EPOCH`` is set, the reproducible-builds
convention), so rendering the same invoice again gives the same bytes (a test checks it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from babel.numbers import format_percent
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from billing.documents import locales
from billing.documents.credit_note import CreditNoteDocument
from billing.documents.document import InvoiceDocument

# The fonts' "modified" date in every PDF (2026-01-01): any constant makes re-renders identical.
FONT_TIMESTAMP = 1767225600
TEMPLATES = Path(__file__).parent / "templates"
ENVIRONMENT = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), undefined=StrictUndefined
)


@dataclass(frozen=True)
class Payment:
    """What the hosted page's pay button needs for Stripe.js."""

    publishable_key: str
    client_secret: str
    return_url: str


@dataclass(frozen=True)
class HostedPage:
    pdf_href: str
    pay: Payment | None = None
    payment_unavailable: bool = False  # collection is on but Stripe could not be asked just now


@dataclass(frozen=True)
class Formats:
    """The template's formatting of values, bound to the document's locale and currency."""

    locale: str
    currency: str

    def money(self, amount_minor: int) -> str:
        return locales.money(amount_minor, self.currency, self.locale)

    def price(self, value: Decimal) -> str:
        return locales.unit_price(value, self.currency, self.locale)

    def quantity(self, value: Decimal) -> str:
        return locales.quantity(value, self.locale)

    def day(self, moment: datetime) -> str:
        return locales.day(moment, self.locale)

    def period(self, start: datetime, end: datetime) -> str:
        """A half-open period ``[start, end)`` shown as its first and last days."""
        return locales.period(start, end, self.locale)

    def percent(self, rate: Decimal) -> str:
        return format_percent(rate / 100, locale=self.locale, decimal_quantization=False)


def render_html(document: InvoiceDocument, page: HostedPage | None = None) -> str:
    template = ENVIRONMENT.get_template("invoice.html")
    return template.render(
        doc=document,
        t=locales.LABELS[document.locale],
        f=Formats(document.locale, document.currency),
        page=page,
    )


def render_pdf(document: InvoiceDocument) -> bytes:
    return _pdf(render_html(document))


def render_credit_note_pdf(document: CreditNoteDocument) -> bytes:
    template = ENVIRONMENT.get_template("credit_note.html")
    html = template.render(
        doc=document, t=locales.LABELS[document.locale], f=Formats(document.locale, document.currency)
    )
    return _pdf(html)


def _pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported on first render: it loads Pango, which the API may never need

    os.environ.setdefault("SOURCE_DATE_EPOCH", str(FONT_TIMESTAMP))
    pdf = HTML(string=html).write_pdf()
    assert pdf is not None
    return bytes(pdf)
