"""Tax on issued invoices against the real database: tax lines per rate, the total with exclusive
tax, inclusive tax inside it, reverse charge, exemption, assigned rates, the ledger's tax_payable,
the accuracy check, and a rate changed after issue. Every test ends with the ledger invariants
checked (conftest)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.insights.accuracy import check_invoice
from billing.invoices import service as billing
from billing.invoices.credit_notes import CreditNoteRequest, LineCredit, create_credit_note
from billing.invoices.taxation import TaxPolicy, tax_policy, use_tax_policy
from customers.tax_rates import assign_tax_rates
from ledger.errors import TallyError
from ledger.money import to_major
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, JAN_31, invoices_of, subscribe

TAX_RATES = """
[[tax_rates]]
key = "fr-vat"
name = "TVA"
rate = "20"
country = "FR"

[[tax_rates]]
key = "gb-vat"
name = "VAT"
rate = "20"
inclusive = true
country = "GB"

[[tax_rates]]
key = "ca-gst"
name = "GST"
rate = "5"
country = "CA"

[[tax_rates]]
key = "ca-qc-qst"
name = "QST"
rate = "9.975"
country = "CA"
region = "QC"
"""


@pytest.fixture
async def taxed_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG + TAX_RATES, as_of=JAN_31 - timedelta(days=30))
    await session.commit()


@pytest.fixture
def seller_in_france() -> Iterator[None]:
    before = tax_policy()
    use_tax_policy(TaxPolicy(seller_country="FR"))
    yield
    use_tax_policy(before)


async def set_address(session: AsyncSession, customer_id: uuid.UUID, **columns: str | None) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    await session.execute(text(f"UPDATE customers SET {assignments} WHERE id = :id"), {**columns, "id": customer_id})
    await session.commit()


async def opening(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, **address: str | None
):  # type: ignore[no-untyped-def]
    """A Basic customer (10.00 a month) at ``address``, and their opening invoice."""
    customer_id = await subscribe(session, f"c-{uuid.uuid4().hex[:8]}", "basic", JAN_31)
    if address:
        await set_address(session, customer_id, **address)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    [invoice] = await invoices_of(session, customer_id)
    return invoice


async def tax_lines(session: AsyncSession, invoice_id: uuid.UUID) -> list[tuple[str, str, Decimal, bool, int, int]]:
    found = (await billing.tax_lines_of(session, [invoice_id]))[invoice_id]
    return [(t.rate_key, t.name, t.rate, t.inclusive, t.taxable_amount, t.tax_amount) for t in found]


async def account_balance(session: AsyncSession, kind: str, currency: str = "USD") -> int:
    found = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind AND a.currency = :currency"
        ),
        {"kind": kind, "currency": currency},
    )
    return int(found.scalar_one())


@pytest.mark.usefixtures("taxed_catalog")
async def test_exclusive_vat_is_added_to_the_total_and_posted_to_tax_payable(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await opening(session, sessions, settings, country="FR")
    assert (invoice.subtotal, invoice.tax_amount, invoice.total, invoice.amount_due) == (10_00, 2_00, 12_00, 12_00)
    assert await tax_lines(session, invoice.id) == [("fr-vat", "TVA", Decimal("20.0000"), False, 10_00, 2_00)]
    assert await account_balance(session, "tax_payable") == -2_00
    assert await account_balance(session, "subscription_revenue") == -10_00
    assert await account_balance(session, "receivable") == 12_00
    assert (await check_invoice(session, invoice)).differences == []


@pytest.mark.usefixtures("taxed_catalog")
async def test_inclusive_vat_is_inside_the_total_and_revenue_is_the_net(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """10.00 including 20 % VAT holds 1.67 (10 − 10/1.2 = 1.666…): the customer pays 10.00, the
    revenue is 8.33 and 1.67 is owed to the tax authority."""
    invoice = await opening(session, sessions, settings, country="GB")
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (10_00, 1_67, 10_00)
    assert await tax_lines(session, invoice.id) == [("gb-vat", "VAT", Decimal("20.0000"), True, 8_33, 1_67)]
    assert await account_balance(session, "subscription_revenue") == -8_33
    assert await account_balance(session, "tax_payable") == -1_67
    assert await account_balance(session, "receivable") == 10_00


@pytest.mark.usefixtures("taxed_catalog")
async def test_several_rates_by_region_each_rounded_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Québec: GST 5 % and QST 9.975 % on 10.00: 0.50 and 1.00 (0.9975), 11.50 in all."""
    invoice = await opening(session, sessions, settings, country="CA", region="QC")
    assert await tax_lines(session, invoice.id) == [
        ("ca-gst", "GST", Decimal("5.0000"), False, 10_00, 50),
        ("ca-qc-qst", "QST", Decimal("9.9750"), False, 10_00, 1_00),
    ]
    assert (invoice.tax_amount, invoice.total) == (1_50, 11_50)
    ontario = await opening(session, sessions, settings, country="CA", region="ON")
    assert [line[0] for line in await tax_lines(session, ontario.id)] == ["ca-gst"]


@pytest.mark.usefixtures("taxed_catalog", "seller_in_france")
async def test_eu_b2b_across_a_border_is_reverse_charged_and_exempt_customers_pay_none(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """A German business with a VAT number buying from a French seller: no VAT, the reverse-charge
    line (Directive 2006/112/EC, Article 196). A French business (domestic) pays French VAT."""
    german = await opening(session, sessions, settings, country="DE", tax_id="DE136695976")
    assert (german.tax_amount, german.total) == (0, 10_00)
    [line] = (await billing.tax_lines_of(session, [german.id]))[german.id]
    assert (line.rate_key, line.reverse_charge, line.taxable_amount, line.tax_amount) == (
        "reverse_charge",
        True,
        10_00,
        0,
    )
    french = await opening(session, sessions, settings, country="FR", tax_id="FR40303265045")
    assert french.tax_amount == 2_00
    exempt = await opening(session, sessions, settings, country="FR", tax_exemption="exempt")
    assert (exempt.tax_amount, exempt.total, await tax_lines(session, exempt.id)) == (0, 10_00, [])
    assert await account_balance(session, "tax_payable") == -2_00


@pytest.mark.usefixtures("taxed_catalog")
async def test_assigned_rates_replace_the_address_and_unknown_keys_write_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    customer_id = await subscribe(session, "assigned", "basic", JAN_31)
    await set_address(session, customer_id, country="FR")
    for keys, message in [
        (["fr-vat", "nope"], "no tax rate 'nope' in the catalog"),
        (["fr-vat", "fr-vat"], "names a tax rate twice"),
        (["x" * 10_000], f"no tax rate {'x' * 64!r} in the catalog"),
        ([f"k{i}" for i in range(11)], "at most 10 tax rates"),
    ]:
        with pytest.raises(TallyError) as refused:
            await assign_tax_rates(session, customer_id, keys, as_of=JAN_31)
        assert (refused.value.field, refused.value.message) == ("taxRateKeys", message)
        await session.rollback()
    with pytest.raises(TallyError, match="no such customer"):
        await assign_tax_rates(session, uuid.uuid4(), ["fr-vat"], as_of=JAN_31)
    await session.rollback()
    assert await assign_tax_rates(session, customer_id, ["ca-gst"], as_of=JAN_31, dry_run=True) == ["ca-gst"]
    await session.rollback()
    found = await session.execute(text("SELECT count(*) FROM customer_tax_rates"))
    assert found.scalar_one() == 0, "refusals and a dry run write nothing"
    await assign_tax_rates(session, customer_id, ["ca-gst", "ca-qc-qst"], as_of=JAN_31)
    await session.commit()
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    [invoice] = await invoices_of(session, customer_id)
    assert [line[0] for line in await tax_lines(session, invoice.id)] == ["ca-gst", "ca-qc-qst"]


@pytest.mark.usefixtures("taxed_catalog")
async def test_a_rate_changed_after_issue_never_rewrites_the_invoice_and_previews_show_the_new_one(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await opening(session, sessions, settings, country="FR")
    await apply_catalog(
        session, CATALOG + TAX_RATES.replace('rate = "20"\ncountry = "FR"', 'rate = "21"\ncountry = "FR"'), as_of=JAN_31
    )
    await session.commit()
    assert await tax_lines(session, invoice.id) == [("fr-vat", "TVA", Decimal("20.0000"), False, 10_00, 2_00)]
    assert (await check_invoice(session, invoice)).differences == []
    preview = await billing.upcoming_invoice(
        session,
        invoice.customer_id,
        as_of=JAN_31 + timedelta(days=3),
        window=billing.BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35)),
    )
    assert preview is not None
    assert [(line.rate, line.tax) for line in preview.taxes] == [(Decimal(21), 2_10)]
    assert preview.total == preview.draft.subtotal + 2_10


@pytest.mark.usefixtures("taxed_catalog")
async def test_the_accuracy_check_finds_a_tampered_tax_line(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    invoice = await opening(session, sessions, settings, country="FR")
    await session.execute(
        text("UPDATE invoice_tax_lines SET tax_amount = 150 WHERE invoice_id = :id"), {"id": invoice.id}
    )
    differences = (await check_invoice(session, invoice)).differences
    assert [(d.description, d.billed_amount, d.rerated_amount) for d in differences] == [
        ("TVA 20 %", Decimal("1.50"), Decimal("2.00"))
    ]
    await session.rollback()


def test_the_seller_country_setting_is_a_country_code() -> None:
    assert Settings(seller_country=" fr ").tax_policy.seller_country == "FR"
    assert Settings().tax_policy.seller_country is None
    for bad in ("XX", "France", "EU", ""):
        with pytest.raises(ValueError, match="ISO 3166-1 alpha-2"):
            Settings(seller_country=bad)


@pytest.mark.usefixtures("taxed_catalog")
@pytest.mark.parametrize(
    ("country", "inclusive"), [("FR", False), ("GB", True)], ids=["exclusive VAT", "inclusive VAT"]
)
async def test_a_credit_note_gives_back_the_tax_its_share_of_the_invoice_carried(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, country: str, inclusive: bool
) -> None:
    """A 20% VAT invoice: 12.00 with 2.00 of tax (exclusive: 10.00 + 2.00), or 10.00 with 1.67 in
    it (inclusive). Credited in two notes, by amount then per line, the tax given back adds up to
    the invoice's tax and tax_payable comes back to zero."""
    invoice = await opening(session, sessions, settings, country=country)
    total, tax = invoice.total, invoice.tax_amount
    assert (total, tax) == ((10_00, 1_67) if inclusive else (12_00, 2_00))
    first = await create_credit_note(
        session,
        CreditNoteRequest(invoice.id, "CREDIT", "order_change", "cn-1", "staff:test", amount=Decimal("3.00")),
        as_of=JAN_31 + timedelta(hours=1),
    )
    await session.commit()
    # 3.00 back of the invoice's total: its tax part in the invoice's own proportion.
    assert first.note.amount == 3_00
    assert first.note.tax_amount == 50  # 3.00 × 1.67 / 10.00 = 0.501 (inclusive), 3.00 × 2.00 / 12.00 (exclusive)
    assert await account_balance(session, "tax_payable") == -(tax - first.note.tax_amount)
    [line] = (await billing.lines_of(session, [invoice.id]))[invoice.id]
    left_on_line = line.amount - sum(part.amount for part in first.lines)
    rest = await create_credit_note(
        session,
        CreditNoteRequest(
            invoice.id,
            "CREDIT",
            "order_change",
            "cn-2",
            "staff:test",
            lines=(LineCredit(line.position, to_major(left_on_line, "USD")),),
        ),
        as_of=JAN_31 + timedelta(hours=2),
    )
    await session.commit()
    assert first.note.amount + rest.note.amount == total
    assert first.note.tax_amount + rest.note.tax_amount == tax
    assert await account_balance(session, "tax_payable") == 0
    assert await account_balance(session, "subscription_revenue") == 0
    with pytest.raises(TallyError) as refused:
        await create_credit_note(
            session,
            CreditNoteRequest(invoice.id, "CREDIT", "other", "cn-3", "staff:test", amount=Decimal("0.01")),
            as_of=JAN_31 + timedelta(hours=3),
        )
    assert refused.value.field == "amount"
