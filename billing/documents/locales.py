"""The words and number formats of invoice documents, in each locale Tally writes them in.

Labels come from one small catalog (:data:`LABELS`, one dict per locale, every key in every
locale: a test checks it). Amounts and dates are formatted by Babel (CLDR) for the locale and the
invoice's currency, so ``1234.5 EUR`` reads ``€1,234.50`` in English and ``1 234,50 €`` in French.
Amounts are integers in minor units until this module shows them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from billing.documents.errors import UnknownLocale
from customers.billing_details import SUPPORTED_LOCALES
from ledger.money import to_major

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice",
        "interim_invoice": "Interim invoice",
        "invoice_number": "Invoice number",
        "issue_date": "Issue date",
        "due_date": "Due date",
        "period": "Period",
        "status_issued": "Awaiting payment",
        "status_paid": "Paid",
        "status_void": "Void",
        "status_uncollectible": "Uncollectible",
        "seller": "From",
        "buyer": "Bill to",
        "tax_id": "Tax ID",
        "description": "Description",
        "quantity": "Quantity",
        "unit_price": "Unit price",
        "amount": "Amount",
        "allowance_used": "Included allowance used",
        "tier": "Tier",
        "flat_fee": "flat fee",
        "subtotal": "Subtotal",
        "discounts": "Discounts",
        "taxes": "Tax",
        "taxable_amount": "on",
        "tax_inclusive": "included",
        "credit_notes": "Credit notes",
        "credit_note": "Credit note",
        "credits_applied": "Prepaid credits applied",
        "total": "Total",
        "amount_due": "Amount due",
        "pay_now": "Pay now",
        "download_pdf": "Download PDF",
        "payment_unavailable": "Online payment is not available for this invoice; please contact us.",
        "reverse_charge": "Reverse charge: VAT to be accounted for by the recipient.",
        "contact": "Questions about this invoice",
        "credit_note_number": "Credit note number",
        "corrected_invoice": "Corrects invoice",
        "invoice_date": "Invoice date",
        "reason": "Reason",
        "reason_duplicate": "Duplicate charge",
        "reason_product_unsatisfactory": "Product unsatisfactory",
        "reason_order_change": "Order change",
        "reason_fraudulent": "Fraudulent charge",
        "reason_other": "Other",
        "settlement": "Settled by",
        "settled_refund": "Refund to your card",
        "settled_credit": "Added to your credit balance",
        "settled_reduce_due": "Taken off the amount due",
        "credited_lines": "Credited",
        "tax_given_back": "Tax given back",
        "total_credited": "Total credited",
        "credit_note_contact": "Questions about this credit note",
        "net_credited": "Total excluding tax",
        "credit_note_date": "Credit note date",
    },
    "fr": {
        "invoice": "Facture",
        "interim_invoice": "Facture intermédiaire",
        "invoice_number": "Numéro de facture",
        "issue_date": "Date d'émission",
        "due_date": "Date d'échéance",
        "period": "Période",
        "status_issued": "En attente de paiement",
        "status_paid": "Payée",
        "status_void": "Annulée",
        "status_uncollectible": "Irrécouvrable",
        "seller": "Émetteur",
        "buyer": "Facturé à",
        "tax_id": "N° de TVA",
        "description": "Désignation",
        "quantity": "Quantité",
        "unit_price": "Prix unitaire",
        "amount": "Montant",
        "allowance_used": "Franchise incluse utilisée",
        "tier": "Palier",
        "flat_fee": "forfait",
        "subtotal": "Sous-total",
        "discounts": "Remises",
        "taxes": "TVA",
        "taxable_amount": "sur",
        "tax_inclusive": "incluse",
        "credit_notes": "Avoirs",
        "credit_note": "Avoir",
        "credits_applied": "Crédits prépayés appliqués",
        "total": "Total",
        "amount_due": "Montant dû",
        "pay_now": "Payer maintenant",
        "download_pdf": "Télécharger le PDF",
        "payment_unavailable": "Le paiement en ligne n'est pas disponible pour cette facture ; contactez-nous.",
        "reverse_charge": "Autoliquidation : TVA due par le preneur.",
        "contact": "Questions sur cette facture",
        "credit_note_number": "Numéro d'avoir",
        "corrected_invoice": "Facture rectifiée",
        "invoice_date": "Date de la facture",
        "reason": "Motif",
        "reason_duplicate": "Facturation en double",
        "reason_product_unsatisfactory": "Produit non satisfaisant",
        "reason_order_change": "Modification de commande",
        "reason_fraudulent": "Transaction frauduleuse",
        "reason_other": "Autre",
        "settlement": "Règlement",
        "settled_refund": "Remboursement sur votre carte",
        "settled_credit": "Ajouté à votre solde créditeur",
        "settled_reduce_due": "Déduit du montant dû",
        "credited_lines": "Montants crédités",
        "tax_given_back": "Taxe restituée",
        "total_credited": "Total de l'avoir",
        "credit_note_contact": "Questions sur cet avoir",
        "net_credited": "Total HT",
        "credit_note_date": "Date de l'avoir",
    },
    "de": {
        "invoice": "Rechnung",
        "interim_invoice": "Zwischenrechnung",
        "invoice_number": "Rechnungsnummer",
        "issue_date": "Rechnungsdatum",
        "due_date": "Fälligkeitsdatum",
        "period": "Leistungszeitraum",
        "status_issued": "Zahlung ausstehend",
        "status_paid": "Bezahlt",
        "status_void": "Storniert",
        "status_uncollectible": "Uneinbringlich",
        "seller": "Von",
        "buyer": "Rechnung an",
        "tax_id": "USt-IdNr.",
        "description": "Beschreibung",
        "quantity": "Menge",
        "unit_price": "Einzelpreis",
        "amount": "Betrag",
        "allowance_used": "Genutztes Inklusivkontingent",
        "tier": "Staffel",
        "flat_fee": "Pauschale",
        "subtotal": "Zwischensumme",
        "discounts": "Rabatte",
        "taxes": "Steuer",
        "taxable_amount": "auf",
        "tax_inclusive": "enthalten",
        "credit_notes": "Gutschriften",
        "credit_note": "Gutschrift",
        "credits_applied": "Angerechnetes Guthaben",
        "total": "Gesamt",
        "amount_due": "Fälliger Betrag",
        "pay_now": "Jetzt bezahlen",
        "download_pdf": "PDF herunterladen",
        "payment_unavailable": "Online-Zahlung ist für diese Rechnung nicht verfügbar; bitte kontaktieren Sie uns.",
        "reverse_charge": "Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge).",
        "contact": "Fragen zu dieser Rechnung",
        "credit_note_number": "Gutschriftsnummer",
        "corrected_invoice": "Berichtigte Rechnung",
        "invoice_date": "Rechnungsdatum",
        "reason": "Grund",
        "reason_duplicate": "Doppelte Berechnung",
        "reason_product_unsatisfactory": "Produkt nicht zufriedenstellend",
        "reason_order_change": "Bestelländerung",
        "reason_fraudulent": "Betrügerische Belastung",
        "reason_other": "Sonstiges",
        "settlement": "Ausgleich",
        "settled_refund": "Erstattung auf Ihre Karte",
        "settled_credit": "Ihrem Guthaben gutgeschrieben",
        "settled_reduce_due": "Vom fälligen Betrag abgezogen",
        "credited_lines": "Gutgeschrieben",
        "tax_given_back": "Erstattete Steuer",
        "total_credited": "Gutschriftsbetrag",
        "credit_note_contact": "Fragen zu dieser Gutschrift",
        "net_credited": "Nettobetrag",
        "credit_note_date": "Gutschriftsdatum",
    },
    "es": {
        "invoice": "Factura",
        "interim_invoice": "Factura intermedia",
        "invoice_number": "Número de factura",
        "issue_date": "Fecha de emisión",
        "due_date": "Fecha de vencimiento",
        "period": "Periodo",
        "status_issued": "Pendiente de pago",
        "status_paid": "Pagada",
        "status_void": "Anulada",
        "status_uncollectible": "Incobrable",
        "seller": "Emisor",
        "buyer": "Facturar a",
        "tax_id": "NIF/IVA",
        "description": "Concepto",
        "quantity": "Cantidad",
        "unit_price": "Precio unitario",
        "amount": "Importe",
        "allowance_used": "Franquicia incluida utilizada",
        "tier": "Tramo",
        "flat_fee": "tarifa fija",
        "subtotal": "Subtotal",
        "discounts": "Descuentos",
        "taxes": "Impuestos",
        "taxable_amount": "sobre",
        "tax_inclusive": "incluido",
        "credit_notes": "Notas de crédito",
        "credit_note": "Nota de crédito",
        "credits_applied": "Créditos prepagados aplicados",
        "total": "Total",
        "amount_due": "Importe adeudado",
        "pay_now": "Pagar ahora",
        "download_pdf": "Descargar PDF",
        "payment_unavailable": "El pago en línea no está disponible para esta factura; contacte con nosotros.",
        "reverse_charge": "Inversión del sujeto pasivo: IVA a cargo del destinatario.",
        "contact": "Preguntas sobre esta factura",
        "credit_note_number": "Número de nota de crédito",
        "corrected_invoice": "Factura rectificada",
        "invoice_date": "Fecha de la factura",
        "reason": "Motivo",
        "reason_duplicate": "Cargo duplicado",
        "reason_product_unsatisfactory": "Producto insatisfactorio",
        "reason_order_change": "Cambio en el pedido",
        "reason_fraudulent": "Cargo fraudulento",
        "reason_other": "Otro",
        "settlement": "Liquidación",
        "settled_refund": "Reembolso en su tarjeta",
        "settled_credit": "Añadido a su saldo a favor",
        "settled_reduce_due": "Descontado del importe adeudado",
        "credited_lines": "Abonado",
        "tax_given_back": "Impuesto devuelto",
        "total_credited": "Total abonado",
        "credit_note_contact": "Preguntas sobre esta nota de crédito",
        "net_credited": "Base imponible",
        "credit_note_date": "Fecha de la nota de crédito",
    },
}


def check_locale(locale: str) -> str:
    """The locale if Tally writes documents in it, else ``UNKNOWN_LOCALE`` on ``locale``."""
    if locale not in SUPPORTED_LOCALES:
        shown = locale[:20]
        raise UnknownLocale(f"no documents in {shown!r}; use one of {', '.join(SUPPORTED_LOCALES)}", field="locale")
    return locale


def money(amount_minor: int, currency: str, locale: str) -> str:
    """An amount in minor units, shown in the locale with the currency's symbol and decimals."""
    return format_currency(to_major(amount_minor, currency), currency, locale=locale)


def unit_price(price: Decimal, currency: str, locale: str) -> str:
    """A unit price keeps its decimals (a price of 0.0004 per request is not a zero)."""
    return format_currency(price, currency, locale=locale, decimal_quantization=False)


def quantity(value: Decimal, locale: str) -> str:
    return format_decimal(value, locale=locale, decimal_quantization=False)


def day(moment: datetime, locale: str) -> str:
    """A date in the locale's medium format (``Mar 1, 2026``, ``1 mars 2026``), read in UTC."""
    return format_date(moment.date(), format="medium", locale=locale)


def period(start: datetime, end: datetime, locale: str) -> str:
    """A half-open period ``[start, end)`` as its first and last days (an instant: that day)."""
    last = end - timedelta(microseconds=1) if end > start else end
    if last.date() == start.date():
        return day(start, locale)
    return f"{day(start, locale)} – {day(last, locale)}"
