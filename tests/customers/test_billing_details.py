"""Changing a customer's billing details: each field checked and normalised (every refusal at
once, naming its GraphQL field), partial changes, the history row of only what changed, written
with the change; nothing written for a refusal, a dry run or a change of nothing; concurrent
changes take turns, so the history chains."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.billing_detail_changes import (
    BillingDetailsPatch,
    StoredDetails,
    checked_details,
    history,
    update_billing_details,
)
from customers.billing_details import billing_details_of
from customers.service import NewCustomer, create_customer
from ledger.errors import InvalidFields
from tests.conftest import now

BLANK = StoredDetails(
    name="Acme",
    email="ap@acme.test",
    legal_name=None,
    address_line1=None,
    address_line2=None,
    city=None,
    postal_code=None,
    region=None,
    country=None,
    tax_id=None,
    tax_exemption="none",
    invoice_emails=(),
    locale="en",
)


def refusals(patch: BillingDetailsPatch, current: StoredDetails = BLANK) -> list[tuple[str | None, str]]:
    with pytest.raises(InvalidFields) as refused:
        checked_details(current, patch)
    return [(error.field, error.code) for error in refused.value.errors]


def test_values_are_normalised() -> None:
    after = checked_details(
        BLANK,
        BillingDetailsPatch(
            legal_name="  Acme SAS ",
            country="fr",
            tax_id="fr 40 303 265 045",
            locale="FR",
            invoice_emails=["billing@acme.test", " Billing@ACME.test", "cfo@acme.test"],
        ),
    )
    assert after.legal_name == "Acme SAS"
    assert (after.country, after.tax_id, after.locale) == ("FR", "FR40303265045", "fr")
    assert after.invoice_emails == ("billing@acme.test", "cfo@acme.test"), "duplicates dropped, first spelling kept"
    assert after.name == "Acme" and after.email == "ap@acme.test", "fields not given keep their value"


def test_greece_uses_el_for_vat_numbers() -> None:
    assert checked_details(BLANK, BillingDetailsPatch(country="GR", tax_id="EL094259216")).tax_id == "EL094259216"
    assert refusals(BillingDetailsPatch(country="GR", tax_id="GR094259216")) == [("taxId", "TAX_ID_COUNTRY_MISMATCH")]


def test_outside_the_eu_a_tax_id_has_no_prefix_rule() -> None:
    assert checked_details(BLANK, BillingDetailsPatch(country="US", tax_id="12-3456789")).tax_id == "12-3456789"


def test_changing_only_the_country_is_checked_against_the_tax_id_kept() -> None:
    german = checked_details(BLANK, BillingDetailsPatch(country="DE", tax_id="DE123456789"))
    assert refusals(BillingDetailsPatch(country="FR"), german) == [("address.country", "TAX_ID_COUNTRY_MISMATCH")]


def test_reverse_charge_needs_a_tax_id() -> None:
    assert refusals(BillingDetailsPatch(tax_exemption="reverse_charge")) == [("taxExemption", "TAX_ID_REQUIRED")]
    charged = checked_details(BLANK, BillingDetailsPatch(tax_exemption="reverse_charge", tax_id="FR40303265045"))
    assert refusals(BillingDetailsPatch(tax_id=None), charged) == [("taxId", "TAX_ID_REQUIRED")]


def test_every_refusal_is_reported_at_once_naming_its_field() -> None:
    assert refusals(
        BillingDetailsPatch(
            name="  ",
            legal_name="L" * 201,
            address_line1="line\nbreak",
            country="ZZZ",
            tax_id="FR<script>",
            tax_exemption="sometimes",
            invoice_emails=["ok@acme.test", "not an email", "x" * 300 + "@acme.test"],
            locale="xx",
        )
    ) == [
        ("name", "INVALID"),
        ("legalName", "TOO_LONG"),
        ("address.line1", "INVALID"),
        ("address.country", "UNKNOWN_COUNTRY"),
        ("taxId", "INVALID"),
        ("taxExemption", "UNKNOWN_TAX_EXEMPTION"),
        ("invoiceEmails[1]", "INVALID_EMAIL"),
        ("invoiceEmails[2]", "TOO_LONG"),
        ("locale", "UNKNOWN_LOCALE"),
    ]


@pytest.mark.parametrize(
    ("patch", "field", "code"),
    [
        (BillingDetailsPatch(legal_name="L" * 201), "legalName", "TOO_LONG"),
        (BillingDetailsPatch(address_line1="x" * 10_000), "address.line1", "TOO_LONG"),
        (BillingDetailsPatch(postal_code="7" * 21), "address.postalCode", "TOO_LONG"),
        (BillingDetailsPatch(city="line\nbreak"), "address.city", "INVALID"),
        (BillingDetailsPatch(region="zero\u200bwidth"), "address.region", "INVALID"),
        (BillingDetailsPatch(tax_id="FR<script>"), "taxId", "INVALID"),
        (BillingDetailsPatch(tax_id="FR" + "1" * 40), "taxId", "TOO_LONG"),
        (BillingDetailsPatch(email="x" * 300 + "@acme.test"), "email", "TOO_LONG"),
        (BillingDetailsPatch(email="not-an-email"), "email", "INVALID_EMAIL"),
        (BillingDetailsPatch(tax_exemption="sometimes"), "taxExemption", "UNKNOWN_TAX_EXEMPTION"),
        (BillingDetailsPatch(locale=None), "locale", "INVALID"),
        (BillingDetailsPatch(name=None), "name", "INVALID"),
        (BillingDetailsPatch(invoice_emails=[f"u{i}@acme.test" for i in range(11)]), "invoiceEmails", "LIMIT_EXCEEDED"),
        (BillingDetailsPatch(invoice_emails=["a@acme.test"] * 1000), "invoiceEmails", "LIMIT_EXCEEDED"),
    ],
)
def test_hostile_values_are_refused_naming_the_field(patch: BillingDetailsPatch, field: str, code: str) -> None:
    assert refusals(patch) == [(field, code)]


def test_ten_addresses_after_duplicates_are_dropped_are_enough() -> None:
    emails = [f"u{i}@acme.test" for i in range(10)] * 2
    assert len(checked_details(BLANK, BillingDetailsPatch(invoice_emails=emails)).invoice_emails) == 10


async def new_customer(session: AsyncSession) -> uuid.UUID:
    customer = await create_customer(
        session,
        NewCustomer(external_id=f"org_{uuid.uuid4().hex[:8]}", name="Acme", currency="EUR", email="ap@acme.test"),
        as_of=now(),
    )
    await session.commit()
    return customer.id


async def changes(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM customer_billing_detail_changes"))).scalar_one())


async def test_a_change_is_written_with_the_history_of_only_what_changed(session: AsyncSession) -> None:
    customer_id = await new_customer(session)
    outcome = await update_billing_details(
        session,
        customer_id,
        BillingDetailsPatch(legal_name="Acme SAS", country="fr", locale="fr", tax_id="FR40303265045"),
        actor="staff:ana@tally.test",
        as_of=now(),
    )
    await session.commit()
    assert outcome.changed == ("legal_name", "country", "tax_id", "locale")
    [row] = await history(session, customer_id)
    assert row.actor == "staff:ana@tally.test"
    assert row.before == {"legal_name": None, "country": None, "tax_id": None, "locale": "en"}
    assert row.after == {"legal_name": "Acme SAS", "country": "FR", "tax_id": "FR40303265045", "locale": "fr"}
    details = billing_details_of(outcome.customer)
    assert (details.addressee, details.country, details.locale) == ("Acme SAS", "FR", "fr")

    again = await update_billing_details(
        session, customer_id, BillingDetailsPatch(legal_name=" Acme SAS", country="FR"), actor="cli", as_of=now()
    )
    await session.commit()
    assert again.changed == () and again.change is None
    assert await changes(session) == 1, "a change of nothing writes nothing"

    cleared = await update_billing_details(
        session,
        customer_id,
        BillingDetailsPatch(legal_name=None, invoice_emails=["a@acme.test"]),
        actor="cli",
        as_of=now(),
    )
    await session.commit()
    assert cleared.changed == ("legal_name", "invoice_emails")
    newest = (await history(session, customer_id))[0]
    assert (newest.before, newest.after) == (
        {"legal_name": "Acme SAS", "invoice_emails": []},
        {"legal_name": None, "invoice_emails": ["a@acme.test"]},
    )


async def test_a_refusal_or_a_dry_run_writes_nothing(session: AsyncSession) -> None:
    customer_id = await new_customer(session)
    with pytest.raises(InvalidFields):
        await update_billing_details(
            session, customer_id, BillingDetailsPatch(legal_name="Acme SAS", locale="xx"), actor="cli", as_of=now()
        )
    await session.rollback()
    preview = await update_billing_details(
        session, customer_id, BillingDetailsPatch(legal_name="Acme SAS"), actor="cli", as_of=now(), dry_run=True
    )
    assert preview.changed == ("legal_name",) and preview.change is None
    await session.commit()
    assert await changes(session) == 0
    name = (
        await session.execute(text("SELECT legal_name FROM customers WHERE id = :id"), {"id": customer_id})
    ).scalar()
    assert name is None


async def test_concurrent_changes_take_turns_and_the_history_chains(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    customer_id = await new_customer(session)

    async def rename(i: int) -> None:
        async with sessions() as own:
            await update_billing_details(
                own,
                customer_id,
                BillingDetailsPatch(legal_name=f"Acme {i}", city=f"City {i % 3}"),
                actor=f"writer-{i}",
                as_of=now(),
            )
            await own.commit()

    await asyncio.gather(*(rename(i) for i in range(12)))
    rows = list(reversed(await history(session, customer_id)))
    assert len(rows) == 12, "every request changed the legal name"
    replayed: dict[str, object] = {"legal_name": None, "city": None}
    for row in rows:
        assert {name: replayed[name] for name in row.before} == row.before, "each change starts where the last ended"
        replayed.update(row.after)
    stored = (
        await session.execute(text("SELECT legal_name, city FROM customers WHERE id = :id"), {"id": customer_id})
    ).one()
    assert tuple(stored) == (replayed["legal_name"], replayed["city"])
