"""`tally subscription cancel|resume|pause|unpause` against a real database: --json, --dry-run,
one-line reasons and exit code 1 on refusals."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from app.cli import cli
from app.database import create_engine, session_factory
from customers.service import NewCustomer, create_customer
from tests.billing.lifecycle_support import CATALOG
from tests.conftest import STORAGE_ADD_ON, now


def subscribe(database_url: str, external_id: str) -> None:
    async def create() -> None:
        engine = create_engine(database_url)
        async with session_factory(engine)() as session:
            started = now() - timedelta(days=5)
            new = NewCustomer(
                external_id=external_id, name="CLI", currency="USD", plan_key="hundred", started_at=started
            )
            await create_customer(session, new, as_of=started)
            await session.commit()
        await engine.dispose()

    asyncio.run(create())


def test_subscription_commands(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env)

    for command in ("cancel", "resume", "pause", "unpause"):
        assert run("subscription", command, "--help").exit_code == 0
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    assert run("catalog", "apply", str(catalog)).exit_code == 0
    subscribe(database_url, "cli-co")

    dry = json.loads(run("subscription", "pause", "cli-co", "--dry-run", "--json").output)
    assert dry["dryRun"] is True and dry["prorations"][0]["description"].startswith("Unused time on Hundred v1")
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT paused_at FROM subscriptions").fetchone() == (None,), (
            "a dry run writes nothing"
        )
    paused = json.loads(run("subscription", "pause", "cli-co", "--json", "--key", "k1").output)
    assert paused["status"] == "PAUSED" and paused["prorations"] == dry["prorations"]
    again = run("subscription", "pause", "cli-co")
    assert again.exit_code == 1 and "customerId: the subscription is already paused" in again.output
    text = run("subscription", "unpause", "cli-co")
    assert text.exit_code == 0 and "unpause cli-co: effective" in text.output and "Remaining time" in text.output

    scheduled = json.loads(
        run("subscription", "cancel", "cli-co", "--timing", "period-end", "--reason", "budget", "--json").output
    )
    assert scheduled["cancelAt"] and scheduled["issuedInvoices"] == [] and scheduled["finalInvoice"] is not None
    resumed = json.loads(run("subscription", "resume", "cli-co", "--json").output)
    assert resumed["cancelAt"] is None and resumed["status"] == "ACTIVE"
    ended = json.loads(run("subscription", "cancel", "cli-co", "--timing", "immediately", "--json").output)
    assert ended["status"] == "CANCELED" and len(ended["issuedInvoices"]) == 2, (
        "the opening invoice, then the final one"
    )
    assert not any(line["kind"] == "base_fee" for line in ended["finalInvoice"]["lines"])
    unknown = run("subscription", "pause", "nobody")
    assert unknown.exit_code == 1 and "externalId: no such customer" in unknown.output


def test_a_second_subscription_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env)

    for command in ("create", "list"):
        assert run("subscription", command, "--help").exit_code == 0
    for number, text in enumerate((CATALOG, STORAGE_ADD_ON)):
        catalog = tmp_path / f"catalog-{number}.toml"
        catalog.write_text(text)
        assert run("catalog", "apply", str(catalog)).exit_code == 0
    subscribe(database_url, "cli-multi")

    added = json.loads(run("subscription", "create", "cli-multi", "--plan", "storage-addon", "--json").output)
    assert added["plan"] == "storage-addon" and added["status"] == "ACTIVE"
    refused = run("subscription", "create", "cli-multi", "--plan", "sixty")
    assert refused.exit_code == 1 and "planKey: meter 'calls' is already charged" in refused.output
    listed = json.loads(run("subscription", "list", "cli-multi", "--json").output)
    assert [row["plan"] for row in listed] == ["hundred", "storage-addon"] and listed[1]["id"] == added["id"]

    unnamed = run("subscription", "pause", "cli-multi")
    assert unnamed.exit_code == 1 and "subscriptionId: the customer has 2 subscriptions" in unnamed.output
    paused = json.loads(run("subscription", "pause", "cli-multi", "--subscription", added["id"], "--json").output)
    assert paused["status"] == "PAUSED"
    listed = json.loads(run("subscription", "list", "cli-multi", "--json").output)
    assert [row["status"] for row in listed] == ["ACTIVE", "PAUSED"]

    charge = ("charge", "create", "cli-multi", "--description", "Setup", "--unit-price", "5")
    unnamed = run(*charge)
    assert unnamed.exit_code == 1 and "subscriptionId: the customer has 2 subscriptions" in unnamed.output
    named = json.loads(run(*charge, "--subscription", listed[0]["id"], "--json").output)
    assert named["status"] == "pending" and named["amount"] == "5.00"
    minimum = ("commitment", "minimum-spend", "cli-multi", "--reason", "deal", "--amount", "150")
    assert run(*minimum).exit_code == 1
    assert run(*minimum, "--subscription", listed[0]["id"], "--json").exit_code == 0
    assert run(*minimum, "--subscription", "nope").exit_code == 1
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT count(*) FROM subscriptions").fetchone() == (2,)
        assert connection.execute("SELECT subscription_id::text FROM one_off_charges").fetchall() == [
            (listed[0]["id"],)
        ]
        assert connection.execute("SELECT subscription_id::text FROM minimum_spends").fetchall() == [(listed[0]["id"],)]
