"""Migrations are hand-written; the tables they build must be the tables the models describe."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import app.models
import billing.models
import customers.models
import ledger.models
import metering.models
import notifications.models
import pricing.models
from app.database import MIGRATIONS_DIR, sqlalchemy_url
from tests.conftest import admin_execute, with_database

MODEL_MODULES = (
    app.models,
    billing.models,
    customers.models,
    ledger.models,
    metering.models,
    notifications.models,
    pricing.models,
)
# Indexes that exist for queries the ORM never declares (newest-first lists, trigram search).
QUERY_ONLY_INDEXES = {
    "customers_newest_first",
    "customers_search_trgm",
    "spans_newest_first",
    "events_by_customer_time",
    "ledger_accounts_one_per_owner",
    "invoices_newest_first",
    "collection_outbox_due",
    "anomalies_newest_first",
}


def test_migrated_schema_matches_the_models(idle_template_url: str) -> None:
    assert MODEL_MODULES
    engine = create_engine(sqlalchemy_url(idle_template_url))
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    unexpected = [
        diff
        for diff in differences
        if not (diff[0] == "remove_index" and diff[1].name in QUERY_ONLY_INDEXES)
        and not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
    ]
    assert unexpected == []


def _alembic(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def test_the_migrations_after_0017_form_one_chain() -> None:
    """Slices developed side by side each started from 0017; merged, they must run one after
    another, with a single head."""
    scripts = ScriptDirectory.from_config(_alembic())
    assert len(scripts.get_heads()) == 1
    chain = [script.revision for script in scripts.walk_revisions("0017", "heads")]
    assert chain[-1] == "0017"
    assert all(len(scripts.get_revision(revision).nextrev) <= 1 for revision in chain)


def test_upgrade_downgrade_to_0017_and_upgrade_again(server_url: str) -> None:
    name = f"chain_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f"CREATE DATABASE {name}")
    url = with_database(server_url, name)
    try:
        config = _alembic(url)
        command.upgrade(config, "head")
        command.downgrade(config, "0017")
        command.upgrade(config, "head")
    finally:
        admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_kind_constraints_allow_every_kind_the_code_writes(idle_template_url: str) -> None:
    """Each slice recreated these constraints from its own list: the merged one must hold them all."""
    with psycopg.connect(idle_template_url) as connection:
        definitions = dict(
            connection.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname IN ('invoices_kind_known', 'invoice_lines_kind_known')"
            ).fetchall()
        )
    for constraint, kinds in (
        ("invoices_kind_known", billing.models.INVOICE_KINDS),
        ("invoice_lines_kind_known", billing.models.LINE_KINDS),
    ):
        allowed = set(re.findall(r"'([a-z_]+)'", definitions[constraint]))
        assert allowed == set(kinds), constraint


def test_0023_keys_what_was_per_customer_by_the_customers_one_subscription(server_url: str) -> None:
    """Rows written before 0023 name no subscription: the upgrade gives each its customer's one
    subscription, an issued invoice included (its trigger refuses any other change), and the
    invoice key is by subscription from then on."""
    name = f"multisub_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f"CREATE DATABASE {name}")
    url = with_database(server_url, name)
    try:
        config = _alembic(url)
        command.upgrade(config, "0022")
        customer, subscription, version, plan = (uuid.uuid4() for _ in range(4))
        at = "2026-01-01T00:00:00Z"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                "INSERT INTO customers (id, external_id, name, currency, status, created_at) "
                "VALUES (%s, 'acme', 'Acme', 'USD', 'ACTIVE', %s)",
                (customer, at),
            )
            connection.execute(
                "INSERT INTO plans (id, key, name, created_at) VALUES (%s, 'basic', 'Basic', %s)", (plan, at)
            )
            connection.execute(
                "INSERT INTO plan_versions (id, plan_id, version, currency, interval, base_fee, pricing_hash, "
                "created_at, billing_anchor, trial_days, trial_usage, trial_requires_payment_method) "
                "VALUES (%s, %s, 1, 'USD', 'month', 10, 'h', %s, 'anniversary', 0, 'free', false)",
                (version, plan, at),
            )
            connection.execute(
                "INSERT INTO subscriptions (id, customer_id, plan_version_id, started_at, created_at, "
                "billing_anchor, invoiced_through) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (subscription, customer, version, at, at, at, at),
            )
            connection.execute(
                "INSERT INTO subscription_phases (customer_id, starts_at, plan_version_id, billing_anchor) "
                "VALUES (%s, %s, %s, %s)",
                (customer, at, version, at),
            )
            connection.execute(
                "INSERT INTO invoices (id, customer_id, number, kind, status, currency, period_start, period_end, "
                "subtotal, credits_applied, total, amount_due, issued_at) "
                "VALUES (%s, %s, 1, 'opening', 'issued', 'USD', %s, %s, 1000, 0, 1000, 1000, %s)",
                (uuid.uuid4(), customer, at, "2026-02-01T00:00:00Z", at),
            )
            connection.execute(
                "INSERT INTO rated_periods (customer_id, period_start, period_end, event_count, rated_at) "
                "VALUES (%s, %s, %s, 0, %s)",
                (customer, at, "2026-02-01T00:00:00Z", at),
            )
        command.upgrade(config, "head")
        with psycopg.connect(url, autocommit=True) as connection:
            for table in ("subscription_phases", "invoices", "rated_periods"):
                named = connection.execute(f"SELECT subscription_id FROM {table}").fetchall()
                assert named == [(subscription,)], table
            with pytest.raises(psycopg.errors.CheckViolation):
                connection.execute(
                    "INSERT INTO invoices (id, customer_id, number, kind, status, currency, period_start, "
                    "period_end, subtotal, credits_applied, total, amount_due, issued_at) "
                    "VALUES (%s, %s, 2, 'period', 'issued', 'USD', %s, %s, 0, 0, 0, 0, %s)",
                    (uuid.uuid4(), customer, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", at),
                )
        command.downgrade(config, "0022")
        command.upgrade(config, "head")
    finally:
        admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
