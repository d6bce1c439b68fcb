"""The document view model of an issued invoice: everything its hosted page and PDF show, read
from the stored invoice (never recomputed from usage), in raw values that the template formats
for the document's locale.

Sections that other parts of issue 16 fill (discount lines, tax lines per rate, credit notes
applied) are plain lists here; the template shows each only when it is not empty.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.documents.breakdown import TIERED_MODELS, LineBreakdown, breakdown
from billing.documents.errors import InvoiceNotFound
from billing.documents.locales import check_locale
from billing.invoice_numbers import invoice_number
from billing.invoices import repository
from billing.models import InvoiceLine
from customers import repository as customers_repository
from customers.billing_details import billing_details_of
from pricing.models import PlanCharge
from pricing.service import charge_terms, charges_of_version

# Invoice line kinds that reduce the subtotal before tax: shown in their own section.
DISCOUNT_KINDS = ("discount",)


@dataclass(frozen=True)
class Seller:
    """Who issues the invoices (from the settings, passed down by the app)."""

    legal_name: str
    address_lines: tuple[str, ...] = ()
    country: str = ""
    tax_id: str = ""
    email: str = ""


@dataclass(frozen=True)
class Buyer:
    addressee: str
    address_lines: tuple[str, ...]
    tax_id: str | None
    emails: tuple[str, ...]
    locale: str
    reverse_charge: bool


@dataclass(frozen=True)
class DocumentLine:
    description: str
    quantity: Decimal | None
    unit_price: Decimal | None
    amount: int  # minor units, as billed
    service_start: datetime
    service_end: datetime
    working: LineBreakdown | None = None  # allowance used and tiers, for a tiered or allowance charge


@dataclass(frozen=True)
class DiscountLine:
    description: str
    amount: int  # minor units, negative


@dataclass(frozen=True)
class TaxLine:
    name: str
    rate: Decimal  # percent, e.g. 20
    inclusive: bool
    taxable_amount: int
    tax_amount: int


@dataclass(frozen=True)
class CreditNoteApplied:
    number: str
    amount: int
    issued_at: datetime


@dataclass
class InvoiceDocument:
    invoice_id: uuid.UUID
    number: str
    status: str
    currency: str
    locale: str
    issued_at: datetime
    due_at: datetime
    period_start: datetime
    period_end: datetime
    seller: Seller
    buyer: Buyer
    lines: list[DocumentLine]
    subtotal: int
    credits_applied: int  # prepaid credits (grants) consumed at issue
    total: int
    amount_due: int
    discounts: list[DiscountLine] = field(default_factory=list)
    taxes: list[TaxLine] = field(default_factory=list)
    credit_notes: list[CreditNoteApplied] = field(default_factory=list)
    # An interim invoice (threshold invoicing) bills a period's usage so far: its title says so.
    interim: bool = False


def buyer_of(details: dict[str, object]) -> Buyer:
    def text(key: str) -> str:
        value = details.get(key)
        return value if isinstance(value, str) else ""

    city_line = " ".join(part for part in (text("postal_code"), text("city")) if part)
    lines = (text("address_line1"), text("address_line2"), city_line, text("region"), text("country"))
    emails = details.get("invoice_emails")
    return Buyer(
        addressee=text("legal_name") or text("name"),
        address_lines=tuple(line for line in lines if line),
        tax_id=text("tax_id") or None,
        emails=tuple(str(email) for email in emails) if isinstance(emails, list) else (),
        locale=text("locale") or "en",
        reverse_charge=details.get("tax_exemption") == "reverse_charge",
    )


async def build_document(
    session: AsyncSession, invoice_id: uuid.UUID, *, seller: Seller, locale: str | None = None
) -> InvoiceDocument:
    """The invoice as its documents show it, in ``locale`` (default: the buyer's, as invoiced).
    The buyer is the one kept on the invoice at issue; an invoice issued before that was kept
    shows the customer's current details."""
    if locale is not None:
        check_locale(locale)
    invoice = await repository.invoice_by_id(session, invoice_id)
    if invoice is None:
        raise InvoiceNotFound(f"no invoice {invoice_id}", field="invoiceId")
    details = invoice.billing_details
    if details is None:
        customer = (await customers_repository.get_by_ids(session, [invoice.customer_id]))[invoice.customer_id]
        details = billing_details_of(customer).as_json()
    buyer = buyer_of(details)
    rows = (await repository.lines_of(session, [invoice.id])).get(invoice.id, [])
    charges = await _charges(session, rows)
    lines = [
        DocumentLine(
            description=row.description,
            quantity=row.quantity,
            unit_price=row.unit_price,
            amount=row.amount,
            service_start=row.service_start,
            service_end=row.service_end,
            working=_working(row, charges),
        )
        for row in rows
        if row.kind not in DISCOUNT_KINDS
    ]
    discounts = [DiscountLine(row.description, row.amount) for row in rows if row.kind in DISCOUNT_KINDS]
    tax_rows = (await repository.tax_lines_of(session, [invoice.id])).get(invoice.id, [])
    taxes = [
        TaxLine(row.name, row.rate, row.inclusive, row.taxable_amount, row.tax_amount)
        for row in tax_rows
        if not row.reverse_charge
    ]
    if any(row.reverse_charge for row in tax_rows):
        buyer = replace(buyer, reverse_charge=True)
    return InvoiceDocument(
        invoice_id=invoice.id,
        number=invoice_number(invoice.number),
        status=invoice.status,
        currency=invoice.currency,
        locale=locale or buyer.locale,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at or invoice.issued_at,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        seller=seller,
        buyer=buyer,
        lines=lines,
        # The lines before their discounts: the document lists the discounts under it.
        subtotal=invoice.subtotal - sum(discount.amount for discount in discounts),
        credits_applied=invoice.credits_applied,
        total=invoice.total,
        amount_due=invoice.amount_due,
        discounts=discounts,
        taxes=taxes,
        interim=invoice.kind == "interim",
    )


async def _charges(session: AsyncSession, rows: list[InvoiceLine]) -> dict[uuid.UUID, PlanCharge]:
    found: dict[uuid.UUID, PlanCharge] = {}
    for version_id in {row.plan_version_id for row in rows if row.kind == "usage" and row.plan_version_id}:
        found.update({charge.id: charge for charge, _ in await charges_of_version(session, version_id)})
    return found


def _working(row: InvoiceLine, charges: dict[uuid.UUID, PlanCharge]) -> LineBreakdown | None:
    charge = charges.get(row.plan_charge_id) if row.plan_charge_id else None
    if row.kind != "usage" or charge is None or row.quantity is None:
        return None
    terms = charge_terms(charge)
    if terms.model not in TIERED_MODELS and not terms.included:
        return None
    return breakdown(terms, row.quantity, row.amount_exact)
