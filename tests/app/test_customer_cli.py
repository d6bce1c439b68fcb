"""`tally customer update` against a real database: partial changes with the history, --dry-run,
--json, --clear, refusals naming the option, exit code 1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from app.cli import cli
from app.database import create_engine, session_factory
from customers.service import NewCustomer, create_customer
from tests.conftest import now


def new_customer(database_url: str, external_id: str) -> None:
    async def create() -> None:
        engine = create_engine(database_url)
        async with session_factory(engine)() as session:
            new = NewCustomer(external_id=external_id, name="CLI Co", currency="EUR", email="ap@cli.test")
            await create_customer(session, new, as_of=now())
            await session.commit()
        await engine.dispose()

    asyncio.run(create())


def test_customer_update(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env)

    help_text = run("customer", "update", "--help").output
    assert "--legal-name" in help_text and "--invoice-email" in help_text and "--dry-run" in help_text
    new_customer(database_url, "cli-co")

    def stored() -> tuple:
        with psycopg.connect(database_url) as connection:
            row = connection.execute("SELECT legal_name, country, locale, invoice_emails FROM customers").fetchone()
            changes = connection.execute("SELECT count(*) FROM customer_billing_detail_changes").fetchone()
        assert row is not None and changes is not None
        return (*row, changes[0])

    order = ("--legal-name", "CLI Co GmbH", "--country", "de", "--tax-id", "DE 123 456 789", "--locale", "de")
    dry = json.loads(run("customer", "update", "cli-co", *order, "--dry-run", "--json").output)
    assert dry["dryRun"] is True and dry["changed"] == ["legalName", "address.country", "taxId", "locale"]
    assert dry["after"]["taxId"] == "DE123456789"
    assert stored() == (None, None, "en", [], 0), "a dry run writes nothing"

    done = json.loads(run("customer", "update", "cli-co", *order, "--json").output)
    assert done["sequence"] is not None and done["billingDetails"]["locale"] == "de"
    assert stored() == ("CLI Co GmbH", "DE", "de", [], 1)

    text = run("customer", "update", "cli-co", "--invoice-email", "a@cli.test", "--invoice-email", "b@cli.test")
    assert text.exit_code == 0 and "changed invoiceEmails" in text.output
    assert "invoiceEmails: (none) -> a@cli.test, b@cli.test" in text.output
    assert run("customer", "update", "cli-co", "--locale", "de").output.strip() == "cli-co: nothing to change"

    cleared = json.loads(run("customer", "update", "cli-co", "--clear", "legal-name", "--json").output)
    assert cleared["after"] == {"legalName": None}
    assert stored() == (None, "DE", "de", ["a@cli.test", "b@cli.test"], 3)

    refused = run("customer", "update", "cli-co", "--locale", "xx", "--country", "ZZZ", "--invoice-email", "nope")
    assert refused.exit_code == 1
    assert "--country: 'ZZZ' is not an ISO 3166-1 alpha-2" in refused.output
    assert "--invoice-email #1: 'nope' is not an email address" in refused.output
    assert "--locale: must be one of en, fr, de, es" in refused.output
    mismatch = run("customer", "update", "cli-co", "--country", "FR")
    assert mismatch.exit_code == 1 and "--country: an EU VAT number starts with its country's code" in mismatch.output
    assert run("customer", "update", "cli-co", "--clear", "name").exit_code == 1
    missing = run("customer", "update", "nobody", "--locale", "fr")
    assert missing.exit_code == 1 and "no such customer" in missing.output
    assert stored()[-1] == 3, "refusals write nothing"
