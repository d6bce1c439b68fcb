"""The sections other parts of issue 16 fill (discounts, tax lines, credit notes): each shown only
when it has entries, formatted for the locale. Rendered from a view model made by hand."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape

from billing.documents.document import (
    Buyer,
    CreditNoteApplied,
    DiscountLine,
    DocumentLine,
    InvoiceDocument,
    TaxLine,
)
from billing.documents.render import render_html
from tests.billing.documents.support import SELLER

ISSUED = datetime(2026, 3, 1, tzinfo=UTC)
PLAIN = InvoiceDocument(
    invoice_id=uuid.uuid4(),
    number="INV-000042",
    status="issued",
    currency="EUR",
    locale="fr",
    issued_at=ISSUED,
    due_at=datetime(2026, 3, 15, tzinfo=UTC),
    period_start=datetime(2026, 2, 1, tzinfo=UTC),
    period_end=ISSUED,
    seller=SELLER,
    buyer=Buyer("Le Petit Atelier SARL", ("3 place Bellecour",), "FR12345678901", (), "fr", reverse_charge=False),
    lines=[DocumentLine("Scale", Decimal(1), Decimal(100), 10000, datetime(2026, 2, 1, tzinfo=UTC), ISSUED)],
    subtotal=10000,
    credits_applied=0,
    total=11000,
    amount_due=11000,
)


def text_of(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, spaces made one."""
    text = unescape(re.sub(r"<[^>]+>", " ", html.split("<body>")[1]))
    return re.sub(r"[\s\u00a0\u202f]+", " ", text)


def test_empty_sections_are_not_shown() -> None:
    shown = text_of(render_html(PLAIN))
    for label in ("Remises", "TVA 20", "Avoir", "Crédits prépayés", "Autoliquidation"):
        assert label not in shown
    assert "Date d'échéance 15 mars 2026" in shown


def test_filled_sections_are_shown_in_the_locale() -> None:
    filled = replace(
        PLAIN,
        discounts=[DiscountLine("Bienvenue -10 %", -1000)],
        taxes=[TaxLine("TVA", Decimal(20), False, 9000, 1800), TaxLine("TVA", Decimal("5.5"), True, 1000, 52)],
        credit_notes=[CreditNoteApplied("CN-000003", 500, datetime(2026, 3, 5, tzinfo=UTC))],
        credits_applied=300,
        buyer=replace(PLAIN.buyer, reverse_charge=True),
    )
    shown = text_of(render_html(filled))
    assert "Remises: Bienvenue -10 % -10,00 €" in shown
    assert "TVA 20 % sur 90,00 € 18,00 €" in shown
    assert "TVA 5,5 % (incluse) sur 10,00 € 0,52 €" in shown
    assert "Avoir CN-000003 (5 mars 2026) −5,00 €" in shown
    assert "Crédits prépayés appliqués −3,00 €" in shown
    assert "Autoliquidation" in shown


def test_a_paid_invoice_says_paid_and_shows_no_due_date() -> None:
    shown = text_of(render_html(replace(PLAIN, status="paid", amount_due=0), None))
    assert "Payée" in shown and "Date d'échéance" not in shown and "Montant dû 0,00 €" in shown
