"""The whole invoice on paper: a tiered, discounted, taxed invoice paid partly with credits, whose
PDF text (pypdf) equals the invoice's stored lines and totals, in English and in German."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from babel.numbers import format_currency, format_decimal
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.discounts import coupons
from billing.discounts.coupons import NewCoupon
from billing.documents.locales import LABELS
from billing.documents.service import invoice_pdf
from billing.invoices import service as billing
from ledger.grants import grant_credits
from ledger.money import to_major
from tests.billing.documents.support import JAN_31, SELLER, tiered_invoice
from tests.billing.documents.test_documents import NOW, in_order, pdf_text, spaced
from tests.e2e.test_invoice_documents import pdf_first_page_png

FRENCH_VAT = """
[[tax_rates]]
key = "fr-vat"
name = "TVA"
rate = "20"
country = "FR"
"""


async def discounted_taxed_credited_invoice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
):
    async def before_billing(customer_id: uuid.UUID) -> None:
        await coupons.create_coupon(
            session,
            NewCoupon(code="LOYAL10", name="Loyalty", duration="forever", percent_off=Decimal(10)),
            actor="staff:test",
            as_of=JAN_31,
        )
        await coupons.apply_coupon(
            session,
            customer_id=customer_id,
            currency="EUR",
            code="LOYAL10",
            idempotency_key="loyal",
            actor="staff:test",
            as_of=JAN_31 + timedelta(hours=1),
        )
        await grant_credits(
            session,
            customer_id=customer_id,
            currency="EUR",
            amount=150000,  # the opening invoice (base fee 1,080.00 + VAT 216.00) takes 1,296.00 of it
            reason="goodwill",
            actor="staff:test",
            idempotency_key="goodwill",
            as_of=JAN_31 + timedelta(hours=1),
        )
        await session.commit()

    return await tiered_invoice(session, sessions, settings, more_catalog=FRENCH_VAT, before_billing=before_billing)


@pytest.mark.parametrize("locale", ["en", "de"])
async def test_the_pdf_of_a_tiered_discounted_taxed_credited_invoice_says_what_the_invoice_holds(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, locale: str, tmp_path: Path
) -> None:
    invoice = await discounted_taxed_credited_invoice(session, sessions, settings)
    lines = (await billing.lines_of(session, [invoice.id]))[invoice.id]
    [vat] = (await billing.tax_lines_of(session, [invoice.id]))[invoice.id]
    usage, base_fee, discount = lines
    # 4,500 calls: 1,000 included, 2,000 at 0.10, 1,500 at 0.05 = 275.00; base fee 1,200.00;
    # 10% off both = -147.50; VAT 20% of 1,327.50 = 265.50; the 204.00 of credits left; 1,389.00 due.
    assert (usage.amount, base_fee.amount, discount.kind, discount.amount) == (27500, 120000, "discount", -14750)
    assert (vat.name, vat.rate, vat.taxable_amount, vat.tax_amount) == ("TVA", Decimal(20), 132750, 26550)
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (132750, 26550, 159300)
    assert (invoice.credits_applied, invoice.amount_due) == (20400, 138900)

    found = await invoice_pdf(session, invoice.id, seller=SELLER, as_of=NOW, locale=locale)
    await session.commit()
    shown = pdf_text(found.pdf)
    pdf_first_page_png(found.pdf, tmp_path / f"full-invoice-{locale}.png")  # to look at

    def money(minor: int) -> str:
        return spaced(format_currency(to_major(minor, "EUR"), "EUR", locale=locale))

    def price(value: Decimal) -> str:
        return spaced(format_currency(value, "EUR", locale=locale, decimal_quantization=False))

    def number(value: Decimal) -> str:
        return spaced(format_decimal(value, locale=locale))

    labels = LABELS[locale]
    in_order(
        shown,
        [
            labels["invoice"],
            usage.description,
            money(usage.amount),
            f"{labels['tier']} 1 {number(Decimal(2000))} {price(Decimal('0.10'))} {price(Decimal('200.00'))}",
            f"{labels['tier']} 2 {number(Decimal(1500))} {price(Decimal('0.05'))} {price(Decimal('75.00'))}",
            base_fee.description,
            money(base_fee.amount),
            f"{labels['subtotal']} {money(usage.amount + base_fee.amount)}",
            f"{labels['discounts']}: {discount.description} {money(discount.amount)}",
            "TVA",
            money(vat.taxable_amount),
            money(vat.tax_amount),
            f"{labels['total']} {money(invoice.total)}",
            f"{labels['credits_applied']} −{money(invoice.credits_applied)}",
            f"{labels['amount_due']} {money(invoice.amount_due)}",
        ],
    )
