"""A plan priced in USD and EUR, billed to two customers: each subscribes to the prices of their
own currency, is invoiced in it (fees, usage, tax) and posts to the ledger accounts of it; no FX
anywhere. A currency the plan has no prices in is refused, naming the field."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from customers.service import NewCustomer, create_customer
from customers.subscriptions import PlanChangeRequest
from ledger.errors import TallyError
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, FEB_28, JAN_31, invoices_of, lines_of, send_calls

# Basic also priced in EUR: 9.00 a month, 0.08 a call over the same 100 included.
EUR_OPTION = """
  [plans.currency_options.EUR]
  base_fee = "9.00"
  charges = [{ unit_price = "0.08" }]
"""
TWO_CURRENCIES = (
    CATALOG.replace(
        '  unit_price = "0.10"\n  included = 100\n', '  unit_price = "0.10"\n  included = 100\n' + EUR_OPTION, 1
    )
    + """
[[tax_rates]]
key = "fr-vat"
name = "TVA"
rate = "20"
country = "FR"
"""
)


@pytest.fixture
async def two_currency_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, TWO_CURRENCIES, as_of=JAN_31 - timedelta(days=30))
    await session.commit()


async def customer_in(session: AsyncSession, external_id: str, currency: str) -> uuid.UUID:
    customer = await create_customer(
        session,
        NewCustomer(external_id=external_id, name=external_id, currency=currency, plan_key="basic", started_at=JAN_31),
        as_of=JAN_31,
    )
    await session.commit()
    return customer.id


async def balances_by_currency(session: AsyncSession, kind: str) -> dict[str, int]:
    rows = await session.execute(
        text(
            "SELECT a.currency, sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind GROUP BY a.currency"
        ),
        {"kind": kind},
    )
    return {currency: int(total) for currency, total in rows}


@pytest.mark.usefixtures("two_currency_catalog")
async def test_a_plan_in_usd_and_eur_billed_to_two_customers(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    american = await customer_in(session, "us-co", "USD")
    french = await customer_in(session, "fr-co", "EUR")
    await session.execute(text("UPDATE customers SET country = 'FR' WHERE id = :id"), {"id": french})
    await session.commit()
    await send_calls(session, "us-co", 150, JAN_31 + timedelta(days=3))
    await send_calls(session, "fr-co", 150, JAN_31 + timedelta(days=3))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=2))

    us_opening, us_period = await invoices_of(session, american)
    fr_opening, fr_period = await invoices_of(session, french)
    assert (us_opening.currency, us_opening.total, us_opening.tax_amount) == ("USD", 10_00, 0)
    assert (fr_opening.currency, fr_opening.subtotal, fr_opening.tax_amount, fr_opening.total) == (
        "EUR",
        9_00,
        1_80,
        10_80,
    )
    # 50 calls over the allowance: 5.00 USD at 0.10, 4.00 EUR at 0.08; then next month's fee.
    assert [(kind, amount) for kind, _, _, amount in await lines_of(session, us_period.id)] == [
        ("usage", 5_00),
        ("base_fee", 10_00),
    ]
    assert [(kind, amount) for kind, _, _, amount in await lines_of(session, fr_period.id)] == [
        ("usage", 4_00),
        ("base_fee", 9_00),
    ]
    assert (fr_period.subtotal, fr_period.tax_amount, fr_period.total) == (13_00, 2_60, 15_60)
    assert await balances_by_currency(session, "receivable") == {"USD": 25_00, "EUR": 26_40}
    assert await balances_by_currency(session, "tax_payable") == {"EUR": -4_40}
    assert await balances_by_currency(session, "usage_revenue") == {"USD": -5_00, "EUR": -4_00}

    preview = await billing.upcoming_invoice(
        session,
        french,
        as_of=FEB_28 + timedelta(days=2),
        window=billing.BillingWindow(timedelta(hours=1), timedelta(days=35)),
    )
    assert preview is not None and preview.draft.currency == "EUR"
    assert [line.amount("EUR") for line in preview.draft.lines if line.kind == "base_fee"] == [9_00]


@pytest.mark.usefixtures("two_currency_catalog")
async def test_a_currency_the_plan_has_no_prices_in_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(TallyError) as refused:
        await customer_in(session, "gb-co", "GBP")
    assert refused.value.field == "currency"
    assert refused.value.message == "plan 'basic' has no prices in GBP (it is priced in USD)"
    await session.rollback()
    french = await customer_in(session, "fr-co", "EUR")
    with pytest.raises(TallyError) as refused:
        await change_plan(
            session,
            PlanChangeRequest(french, "plus", "IMMEDIATELY", "k1", "test", at=JAN_31 + timedelta(days=1)),
            as_of=JAN_31 + timedelta(days=1),
        )
    assert refused.value.field == "planKey"
    assert "priced in USD" in refused.value.message
    await session.rollback()


@pytest.mark.usefixtures("two_currency_catalog")
async def test_a_simulation_rates_each_customer_on_the_draft_prices_of_their_currency(session: AsyncSession) -> None:
    """The draft raises the EUR base fee to 12.00 and the EUR unit price to 0.09 (USD unchanged):
    the EUR customer's February is 9.00 + 50 × 0.08 = 13.00 now and 12.00 + 50 × 0.09 = 16.50 in
    the draft, in EUR; the USD customer is on a version the draft prices the same in USD, yet the
    plan's version changes as a whole, so they are simulated too, at the same 15.00 USD."""
    await customer_in(session, "us-co", "USD")
    await customer_in(session, "fr-co", "EUR")
    await send_calls(session, "us-co", 150, JAN_31 + timedelta(days=3))
    await send_calls(session, "fr-co", 150, JAN_31 + timedelta(days=3))
    draft = TWO_CURRENCIES.replace('base_fee = "9.00"', 'base_fee = "12.00"').replace(
        'charges = [{ unit_price = "0.08" }]', 'charges = [{ unit_price = "0.09" }]'
    )
    summary = await simulate_pricing(
        session, catalog_text=draft, selection=PeriodSelection(start=JAN_31, end=FEB_28), as_of=FEB_28
    )
    by_customer = {o.customer_key: (o.currency, o.current, o.simulated) for o in summary.outcomes}
    assert by_customer == {"fr-co": ("EUR", 13_00, 16_50), "us-co": ("USD", 15_00, 15_00)}
