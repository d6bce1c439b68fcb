"""Migrations are hand-written; the tables they build must be the tables the models describe."""

from __future__ import annotations

import re
import uuid

import psycopg
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
import pricing.models
from app.database import MIGRATIONS_DIR, sqlalchemy_url
from tests.conftest import admin_execute, with_database

MODEL_MODULES = (app.models, billing.models, customers.models, ledger.models, metering.models, pricing.models)
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


def test_migrated_schema_matches_the_models(template_url: str) -> None:
    assert MODEL_MODULES
    engine = create_engine(sqlalchemy_url(template_url))
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


def test_kind_constraints_allow_every_kind_the_code_writes(template_url: str) -> None:
    """Each slice recreated these constraints from its own list: the merged one must hold them all."""
    with psycopg.connect(template_url) as connection:
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
