"""Tax through GraphQL and the CLI: Invoice.tax, taxLines and taxNote, the upcoming invoice's tax,
taxRates, assignTaxRates (dry run, userErrors naming the field, who may, concurrent calls), and
`tally tax rates|assign`."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from app.billing_run import run_billing
from app.cli import cli
from app.settings import Settings
from app.staff import create_user
from customers.service import NewCustomer, create_customer
from pricing.service import apply_catalog
from tests.billing.test_taxes import TAX_RATES
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, sign_in

INVOICES = """query($id: ID!) { customer(id: $id) {
  invoices { edges { node { subtotal { amount currency } tax { amount } total { amount } amountDue { amount }
    taxNote taxLines { rateKey name rate inclusive taxableAmount { amount } tax { amount } reverseCharge } } } }
  upcomingInvoice { subtotal { amount } tax { amount } total { amount } taxNote
    taxLines { rateKey rate tax { amount } } } } }"""
ASSIGN = """mutation($i: AssignTaxRatesInput!) { assignTaxRates(input: $i) {
  taxRateKeys userErrors { field code message } } }"""


@pytest.fixture
async def french_customer(
    session: AsyncSession, catalog: None, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> str:
    """A Pro customer in France (20.00 a month, VAT 20 % exclusive) with their opening invoice."""
    await apply_catalog(session, TAX_RATES, as_of=now())
    started = now() - timedelta(days=3)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_fr", name="Société", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.execute(text("UPDATE customers SET country = 'FR' WHERE id = :id"), {"id": customer.id})
    await session.commit()
    await run_billing(sessions, settings, as_of=now())
    return str(customer.id)


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


async def test_an_invoice_and_the_upcoming_one_show_their_tax(
    client: httpx.AsyncClient, french_customer: str, token_for
) -> None:
    admin = await token_for("admin")
    customer = (await ask(client, admin, INVOICES, {"id": french_customer}))["customer"]
    [invoice] = [edge["node"] for edge in customer["invoices"]["edges"]]
    assert invoice["subtotal"] == {"amount": "20.00", "currency": "USD"}
    assert (invoice["tax"], invoice["total"], invoice["amountDue"]) == (
        {"amount": "4.00"},
        {"amount": "24.00"},
        {"amount": "24.00"},
    )
    assert invoice["taxNote"] is None
    assert invoice["taxLines"] == [
        {
            "rateKey": "fr-vat",
            "name": "TVA",
            "rate": "20",
            "inclusive": False,
            "taxableAmount": {"amount": "20.00"},
            "tax": {"amount": "4.00"},
            "reverseCharge": False,
        }
    ]
    upcoming = customer["upcomingInvoice"]
    assert upcoming["subtotal"] == {"amount": "20.00"}  # no usage yet: next period's fee
    assert (upcoming["tax"], upcoming["total"]) == ({"amount": "4.00"}, {"amount": "24.00"})
    assert upcoming["taxLines"] == [{"rateKey": "fr-vat", "rate": "20", "tax": {"amount": "4.00"}}]


async def test_assign_tax_rates_refuses_bad_input_and_a_dry_run_writes_nothing(
    client: httpx.AsyncClient, french_customer: str, token_for, database_url: str
) -> None:
    admin = await token_for("admin")

    async def assign(keys: list[str], **more: Any) -> dict[str, Any]:
        data = await ask(client, admin, ASSIGN, {"i": {"customerId": french_customer, "taxRateKeys": keys, **more}})
        return data["assignTaxRates"]

    refused = await assign(["fr-vat", "unknown"])
    assert refused == {
        "taxRateKeys": None,
        "userErrors": [
            {"field": ["taxRateKeys"], "code": "UNKNOWN_TAX_RATE", "message": "no tax rate 'unknown' in the catalog"}
        ],
    }
    assert (await assign(["a" * 100_000]))["userErrors"][0]["code"] == "UNKNOWN_TAX_RATE"
    assert (await assign(["fr-vat"] * 11))["userErrors"][0]["message"] == "at most 10 tax rates"
    assert (await assign(["fr-vat", "fr-vat"]))["userErrors"][0]["message"] == "names a tax rate twice"
    assert (await assign(["'; DROP TABLE invoices; --"]))["userErrors"][0]["field"] == ["taxRateKeys"]
    nobody = await ask(
        client,
        admin,
        ASSIGN,
        {"i": {"customerId": "00000000-0000-0000-0000-000000000000", "taxRateKeys": ["fr-vat"]}},
    )
    assert nobody["assignTaxRates"]["userErrors"][0]["field"] == ["customerId"]
    assert (await assign(["ca-gst"], dryRun=True)) == {"taxRateKeys": ["ca-gst"], "userErrors": []}
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT count(*) FROM customer_tax_rates").fetchone() == (0,)
    assert (await assign(["ca-gst", "ca-qc-qst"])) == {"taxRateKeys": ["ca-gst", "ca-qc-qst"], "userErrors": []}
    customer = (await ask(client, admin, INVOICES, {"id": french_customer}))["customer"]
    assert [line["rateKey"] for line in customer["upcomingInvoice"]["taxLines"]] == ["ca-gst", "ca-qc-qst"]


async def test_only_staff_who_write_customers_assign_and_concurrent_assignments_never_mix(
    client: httpx.AsyncClient, french_customer: str, token_for, database_url: str
) -> None:
    own = await token_for("customer", "org_fr")
    response = await graphql(client, own, ASSIGN, {"i": {"customerId": french_customer, "taxRateKeys": []}})
    assert response.json()["errors"] and not (response.json()["data"] or {}).get("assignTaxRates")
    admin = await token_for("admin")
    sets = [["fr-vat"], ["ca-gst", "ca-qc-qst"], ["gb-vat"], ["ca-qc-qst", "ca-gst", "fr-vat"]] * 4
    answers = await asyncio.gather(
        *(graphql(client, admin, ASSIGN, {"i": {"customerId": french_customer, "taxRateKeys": keys}}) for keys in sets)
    )
    assert all(answer.json()["data"]["assignTaxRates"]["userErrors"] == [] for answer in answers)
    with psycopg.connect(database_url) as connection:
        final = [
            row[0]
            for row in connection.execute("SELECT tax_rate_key FROM customer_tax_rates ORDER BY position").fetchall()
        ]
    assert final in sets, "one assignment wins whole"


async def test_the_tax_rates_in_graphql(client: httpx.AsyncClient, french_customer: str, token_for) -> None:
    support = await token_for("support")
    data = await ask(client, support, "{ taxRates { key name rate inclusive country region version } }", {})
    assert data["taxRates"][1] == {
        "key": "ca-qc-qst",
        "name": "QST",
        "rate": "9.975",
        "inclusive": False,
        "country": "CA",
        "region": "QC",
        "version": 1,
    }


def test_tally_tax_rates_and_assign(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env)

    catalog = tmp_path / "catalog.toml"
    catalog.write_text(TAX_RATES)
    assert run("catalog", "apply", str(catalog)).exit_code == 0
    listed = json.loads(run("tax", "rates", "--json").output)
    assert [(r["key"], r["rate"], r["inclusive"], r["region"]) for r in listed] == [
        ("ca-gst", "5", False, None),
        ("ca-qc-qst", "9.975", False, "QC"),
        ("fr-vat", "20", False, None),
        ("gb-vat", "20", True, None),
    ]
    assert "fr-vat: TVA 20 % exclusive, FR (version 1)" in run("tax", "rates").output
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO customers (id, external_id, name, currency, status, created_at) "
            "VALUES (gen_random_uuid(), 'cli-co', 'CLI', 'USD', 'ACTIVE', now())"
        )
    unknown = run("tax", "assign", "cli-co", "fr-vat", "nope")
    assert unknown.exit_code == 1 and "taxRateKeys: no tax rate 'nope' in the catalog" in unknown.output
    assert run("tax", "assign", "nobody", "fr-vat").exit_code == 1
    dry = json.loads(run("tax", "assign", "cli-co", "fr-vat", "--dry-run", "--json").output)
    assert dry == {"customer": "cli-co", "taxRateKeys": ["fr-vat"], "dryRun": True}
    assert run("tax", "assign", "cli-co", "ca-gst", "ca-qc-qst").output.strip() == (
        "assigned to cli-co: ca-gst, ca-qc-qst"
    )
    with psycopg.connect(database_url) as connection:
        rows = connection.execute("SELECT tax_rate_key FROM customer_tax_rates ORDER BY position").fetchall()
    assert rows == [("ca-gst",), ("ca-qc-qst",)]
    assert run("tax", "assign", "cli-co").output.strip() == "assigned to cli-co: none (the rates of their address)"


async def test_a_reverse_charged_invoice_carries_the_note(
    client: httpx.AsyncClient, french_customer: str, token_for, session: AsyncSession, sessions, settings: Settings
) -> None:
    started = now() - timedelta(days=3)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_de", name="GmbH", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.execute(
        text(
            "UPDATE customers SET country = 'DE', tax_id = 'DE136695976', tax_exemption = 'reverse_charge' WHERE id = :id"
        ),
        {"id": customer.id},
    )
    await session.commit()
    await run_billing(sessions, settings, as_of=now())
    admin = await token_for("admin")
    data = await ask(client, admin, INVOICES, {"id": str(customer.id)})
    [invoice] = [edge["node"] for edge in data["customer"]["invoices"]["edges"]]
    assert (invoice["tax"], invoice["total"]) == ({"amount": "0.00"}, {"amount": "20.00"})
    assert invoice["taxNote"] == (
        "Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC)"
    )
    assert [(line["rateKey"], line["reverseCharge"], line["tax"]) for line in invoice["taxLines"]] == [
        ("reverse_charge", True, {"amount": "0.00"})
    ]
    assert data["customer"]["upcomingInvoice"]["taxNote"] == invoice["taxNote"]


async def test_the_console_shows_the_tax_of_an_invoice_and_of_the_upcoming_one(
    client: httpx.AsyncClient, french_customer: str, session: AsyncSession
) -> None:
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/invoices/INV-000001")
    assert page.status_code == 200
    assert "TVA 20 % on 20.00</dt><dd>4.00 USD</dd>" in page.text
    assert "<dt>Total</dt><dd>24.00 USD</dd>" in page.text
    tab = await client.get(f"/console/customers/{french_customer}/invoices")
    assert tab.status_code == 200 and "TVA 20 % on 20.00</dt><dd>4.00 USD</dd>" in tab.text
