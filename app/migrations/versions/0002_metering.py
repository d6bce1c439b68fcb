"""Metering: raw events keyed by their id, hourly rollups, distinct values, quarantine,
watermarks, ingestion statistics.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # The event id alone is the key: the contract counts an id once whatever its payload. On a
    # cluster distributed by customer it would become (customer_id, event_id) (docs/scaling.md).
    op.create_table(
        "events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        _timestamp("occurred_at"),
        sa.Column("properties", JSONB, nullable=False),
        _timestamp("received_at"),
        sa.Column("trace_id", sa.String(32)),
    )
    op.create_index("events_by_customer_time", "events", ["customer_id", "event_type", "occurred_at"])
    op.create_table(
        "usage_rollups",
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("meter_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("dimensions", JSONB, primary_key=True),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("value_sum", sa.Numeric),
        sa.Column("value_max", sa.Numeric),
        sa.Column("latest_value", sa.Numeric),
        _timestamp("latest_at"),
        sa.Column("latest_event_id", sa.Text, nullable=False),
    )
    op.create_table(
        "usage_unique_values",
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("meter_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("dimensions", JSONB, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
    )
    op.create_table(
        "quarantined_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("code", sa.String, nullable=False),
        sa.Column("message", sa.String, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        _timestamp("received_at"),
        _timestamp("replayed_at", nullable=True),
        sa.Column("replay_outcome", sa.String),
    )
    op.create_table(
        "customer_watermarks",
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        _timestamp("watermark"),
        _timestamp("last_received_at"),
    )
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        _timestamp("received_at"),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("rejected", JSONB, nullable=False),
        sa.Column("ingest_lag_p50_ms", sa.BigInteger),
        sa.Column("ingest_lag_max_ms", sa.BigInteger),
        sa.Column("processing_ms", sa.Integer, nullable=False),
        sa.Column("trace_id", sa.String(32)),
    )
    op.create_index("ix_ingest_batches_received_at", "ingest_batches", ["received_at"])
    # Raw events are the record of what happened: never edited, never deleted.
    op.execute(
        "CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )


def downgrade() -> None:
    for table in (
        "ingest_batches", "customer_watermarks", "quarantined_events", "usage_unique_values",
        "usage_rollups", "events",
    ):
        op.drop_table(table)
