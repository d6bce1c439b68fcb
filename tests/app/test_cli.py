"""The `tally` command line against a real database: outputs, exit codes, one-line reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import CONTRACT, DEMO_CATALOG


@pytest.fixture
def run(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    # In-process: a command that records spans would install this test process's tracer provider.
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}

    def invoke(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env, input=stdin)

    return invoke


def scalar(database_url: str, sql: str) -> object:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(sql).fetchone()
        assert row is not None
        return row[0]


def test_every_command_has_help(run) -> None:
    for command in [
        [],
        ["serve"],
        ["migrate"],
        ["demo"],
        ["catalog", "apply"],
        ["token", "create"],
        ["token", "revoke"],
        ["token", "list"],
        ["user", "create"],
        ["billing", "run"],
        ["reconcile"],
        ["invoices", "verify"],
        ["jobs", "run"],
        ["ledger", "verify"],
        ["events", "replay"],
        ["anomalies", "scan"],
    ]:
        result = run(*command, "--help")
        assert result.exit_code == 0, command
        assert "Usage:" in result.output


def test_token_create_prints_only_the_token_and_stores_only_its_hash(run, database_url: str) -> None:
    result = run("token", "create", "--role", "finance")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("tly_") and "\n" not in token
    stored = scalar(database_url, "SELECT token_hash FROM api_tokens")
    assert stored != token and len(str(stored)) == 64
    listed = json.loads(run("token", "list", "--json").stdout)
    assert [(t["role"], t["revokedAt"]) for t in listed] == [("finance", None)]
    assert datetime.fromisoformat(listed[0]["createdAt"]).tzinfo is not None and "T" in listed[0]["createdAt"]
    assert token not in json.dumps(listed)
    revoked = run("token", "revoke", token)
    assert revoked.exit_code == 0
    assert scalar(database_url, "SELECT revoked_at IS NOT NULL FROM api_tokens") is True


def test_bad_token_requests_exit_1_with_the_reason(run, database_url: str) -> None:
    unknown_role = run("token", "create", "--role", "superuser")
    assert unknown_role.exit_code == 1
    assert "unknown role 'superuser'" in unknown_role.output
    unknown_customer = run("token", "create", "--role", "customer", "--customer", "org_nobody")
    assert unknown_customer.exit_code == 1
    assert "no customer with external id 'org_nobody'" in unknown_customer.output
    missing_customer = run("token", "create", "--role", "customer")
    assert missing_customer.exit_code == 1
    assert scalar(database_url, "SELECT count(*) FROM api_tokens") == 0


def test_catalog_apply_dry_run_then_apply_then_unchanged(run, database_url: str) -> None:
    example = str(CONTRACT / "catalog.example.toml")
    dry = run("catalog", "apply", example, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "plan pro: create version 1" in dry.stdout
    assert scalar(database_url, "SELECT count(*) FROM plans") == 0
    applied = json.loads(run("catalog", "apply", example, "--json").stdout)
    assert applied["ok"] and {c["action"] for c in applied["changes"]} == {"create"}
    again = run("catalog", "apply", example)
    assert "0 change(s) applied." in again.stdout


def test_an_invalid_catalog_lists_every_problem_and_writes_nothing(run, database_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(
        (CONTRACT / "catalog.example.toml")
        .read_text()
        .replace('{ up_to = 2000, unit_price = "0.04" }', '{ up_to = 100, unit_price = "0.04" }')
        .replace(
            'currency = "USD"\ninterval = "month"\nbase_fee = "40.00"',
            'currency = "USD"\ninterval = "fortnight"\nbase_fee = "40.00"',
        )
    )
    result = run("catalog", "apply", str(broken))
    assert result.exit_code == 1
    assert "plans[1].charges[0].tiers: up_to must increase" in result.output
    assert "plans[2].interval: 'fortnight' is not one of week, month, quarter, year" in result.output
    assert "2 problem(s); nothing was written." in result.output
    assert scalar(database_url, "SELECT count(*) FROM meters") == 0


def test_user_create_from_stdin_hashes_with_argon2(run, database_url: str) -> None:
    result = run(
        "user",
        "create",
        "--email",
        "Ops@Example.com",
        "--role",
        "finance",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert result.exit_code == 0, result.output
    stored = str(scalar(database_url, "SELECT password_hash FROM staff_users WHERE email = 'ops@example.com'"))
    assert stored.startswith("$argon2id$")
    short = run("user", "create", "--email", "b@example.com", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1 and "password: use at least 10 characters" in short.output
    bad_role = run(
        "user",
        "create",
        "--email",
        "c@example.com",
        "--role",
        "ingest",
        "--password-stdin",
        stdin="long enough password\n",
    )
    assert bad_role.exit_code == 1 and "unknown role 'ingest'" in bad_role.output
    again = run(
        "user",
        "create",
        "--email",
        "ops@example.com",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="another long password\n",
    )
    assert again.exit_code == 1 and "already exists" in again.output


def test_demo_loads_once(run, database_url: str) -> None:
    first = json.loads(run("demo", "--json").stdout)
    assert first["loaded"] is True and first["customers"] == 25
    assert first["adminEmail"] == "admin@example.com" and len(first["adminPassword"]) >= 12
    second = json.loads(run("demo", "--json").stdout)
    assert second["loaded"] is False
    assert second["adminPassword"] == first["adminPassword"], "the login is kept under the data dir"
    assert scalar(database_url, "SELECT count(*) FROM customers") == 25
    plans = scalar(database_url, "SELECT count(DISTINCT plan_version_id) FROM subscriptions")
    assert plans == 3, "customers across all plans"
    assert scalar(database_url, "SELECT count(DISTINCT customer_id) FROM invoices") == 25, "every customer invoiced"
    assert scalar(database_url, "SELECT count(*) FROM plan_changes") == 2


def test_billing_run_issues_what_is_due_once_and_reports_it(run, database_url: str) -> None:
    assert run("demo", "--json").exit_code == 0
    issued_by_demo = scalar(database_url, "SELECT count(*) FROM invoices")
    nothing_new = json.loads(run("billing", "run", "--json").stdout)
    assert nothing_new["invoicesIssued"] == 0, "the demo billed every period closed by now"
    ahead = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    refused = run("billing", "run", "--as-of", ahead, "--json")
    assert refused.exit_code == 1 and "is in the future; invoices are final" in refused.output
    assert scalar(database_url, "SELECT count(*) FROM invoices") == issued_by_demo, "nothing issued"
    with psycopg.connect(database_url, autocommit=True) as connection:  # as if the demo ran 40 days ago
        connection.execute(
            "UPDATE subscriptions SET started_at = started_at - interval '40 days', "
            "invoiced_through = invoiced_through - interval '40 days', "
            "billing_anchor = billing_anchor - interval '40 days', "
            "period_closes_at = period_closes_at - interval '40 days'"
        )
        connection.execute(
            "UPDATE subscription_phases SET starts_at = starts_at - interval '40 days', "
            "billing_anchor = billing_anchor - interval '40 days'"
        )
    result = run("billing", "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["invoicesIssued"] >= 25 and report["customersConsidered"] == 25
    assert Decimal(report["totals"]["USD"]) > 0
    assert json.loads(run("billing", "run", "--json").stdout)["invoicesIssued"] == 0
    numbers = scalar(database_url, "SELECT array_agg(number ORDER BY number) FROM invoices")
    assert numbers == list(range(1, issued_by_demo + report["invoicesIssued"] + 1)), "gapless"
    bad = run("billing", "run", "--as-of", "next tuesday")
    assert bad.exit_code == 1 and "--as-of" in bad.output


def test_anomaly_scan_stores_what_it_finds_once(run, database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "INSERT INTO quarantined_events (event_id, code, message, payload, received_at) "
            "VALUES ('evt-ghost', 'UNKNOWN_CUSTOMER', 'no customer org_ghost', '{}', now() - interval '2 hours')"
        )
    first = run("anomalies", "scan", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["found"]["QUARANTINE"], report["new"]["QUARANTINE"]) == (1, 1)
    assert sum(report["new"].values()) == 1
    again = run("anomalies", "scan")
    assert again.exit_code == 0, again.output
    assert "QUARANTINE: 1 found, 0 new" in again.stdout and "0 new anomaly(ies) of 1 found" in again.stdout
    assert scalar(database_url, "SELECT count(*) FROM anomalies") == 1
    bad = run("anomalies", "scan", "--as-of", "2026-12-01T00:00:00")
    assert bad.exit_code == 1 and "--as-of: give a time zone offset" in bad.output


def test_a_dry_run_can_simulate_a_price_change_on_real_usage(run, database_url: str, tmp_path: Path) -> None:
    assert run("demo", "--json").exit_code == 0
    draft = tmp_path / "draft.toml"
    draft.write_text(DEMO_CATALOG.read_text().replace('base_fee = "20.00"', 'base_fee = "25.00"'))
    result = run("catalog", "apply", str(draft), "--dry-run", "--simulate-periods", "2", "--json")
    assert result.exit_code == 0, result.output
    simulation = json.loads(result.stdout)["simulation"]
    pro_customers = scalar(
        database_url,
        "SELECT count(*) FROM subscriptions s JOIN plan_versions v ON v.id = coalesce("
        "CASE WHEN s.pending_change_at <= now() THEN s.pending_plan_version_id END, s.plan_version_id) "
        "JOIN plans p ON p.id = v.plan_id WHERE p.key = 'pro'",
    )
    assert len(simulation["customers"]) == pro_customers
    # A 5.00 higher base fee over up to two periods: every difference is 5.00 per period simulated.
    for row in simulation["customers"]:
        assert Decimal(row["difference"]) == 5 * row["periods"], row
    assert scalar(database_url, "SELECT count(*) FROM plan_versions") == 3, "a dry run writes nothing"
    human = run("catalog", "apply", str(draft), "--dry-run", "--simulate-periods", "2")
    assert "Biggest movers" in human.stdout and "Revenue USD" in human.stdout
    refused = run("catalog", "apply", str(draft), "--simulate-periods", "2")
    assert refused.exit_code == 1 and "--dry-run" in refused.output


def test_a_bad_database_url_is_a_one_line_reason(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": "mysql://nope", "TALLY_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "DATABASE_URL must be a postgresql:// URL" in result.output


def test_ledger_verify_passes_then_reports_a_planted_corruption(run, database_url: str) -> None:
    assert run("ledger", "verify").exit_code == 0
    with psycopg.connect(database_url, autocommit=True) as connection:
        account = connection.execute(
            "INSERT INTO ledger_accounts (id, customer_id, kind, currency, balance, created_at) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 'credits', 'USD', 5, now()) RETURNING id"
        ).fetchone()
    assert account is not None
    result = run("ledger", "verify", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [v["check"] for v in report["violations"]] == ["cached balance differs from postings"]
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("DELETE FROM ledger_accounts")


def test_reconcile_without_stripe_says_collection_is_off_with_its_own_exit_code(run) -> None:
    as_json = run("reconcile", "--json")
    assert as_json.exit_code == 4
    assert json.loads(as_json.stdout)["collection"] == "off"
    as_text = run("reconcile")
    assert as_text.exit_code == 4 and "collection is off" in as_text.output and "agree" not in as_text.output
    described = run("reconcile", "--help").output
    assert "3, discrepancies found" in described and "4, collection is off" in described
