"""Migrations are hand-written; the tables they build must be the tables the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import app.models
import billing.models
import customers.models
import ledger.models
import metering.models
import pricing.models
from app.database import sqlalchemy_url

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
