"""Payments Tally knows of (with what was refunded and disputed), disputes, reconciliation runs and
their discrepancies, anomalies, metering snapshots; the outbox learns that a payment can wait for
the customer; Stripe events keep the trace of their delivery.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_payments",
        sa.Column("payment_intent_id", sa.Text, primary_key=True),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("charge_id", sa.Text, unique=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("disputed", sa.BigInteger, nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_transaction_id", UUID(as_uuid=True), nullable=False),
        sa.CheckConstraint("amount > 0 AND refunded >= 0 AND disputed >= 0", name="stripe_payments_amounts"),
    )
    op.create_index("stripe_payments_by_customer", "stripe_payments", ["customer_id", "paid_at"])
    op.create_table(
        "stripe_disputes",
        sa.Column("dispute_id", sa.Text, primary_key=True),
        sa.Column("payment_intent_id", sa.Text, sa.ForeignKey("stripe_payments.payment_intent_id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_transaction_id", UUID(as_uuid=True), nullable=False),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked", sa.Integer, nullable=False),
        sa.Column("discrepancies", sa.Integer, nullable=False),
    )
    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("invoice_id", UUID(as_uuid=True)),
        sa.Column("customer_id", UUID(as_uuid=True)),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("tally_side", JSONB),
        sa.Column("stripe_side", JSONB),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("resolved_by", sa.Text),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("kind", "object_id"),
        sa.CheckConstraint(
            "kind IN ('MISSING_IN_TALLY', 'MISSING_IN_STRIPE', 'AMOUNT_MISMATCH', 'CURRENCY_MISMATCH', "
            "'STATUS_MISMATCH', 'DUPLICATE')",
            name="reconciliation_discrepancy_kind",
        ),
        sa.CheckConstraint("status IN ('open', 'resolved')", name="reconciliation_discrepancy_status"),
    )
    op.create_table(
        "anomalies",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True)),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("severity", sa.String, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("numbers", JSONB, nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("status_by", sa.Text),
        sa.Column("status_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("kind", "customer_id", "window_start", postgresql_nulls_not_distinct=True),
        sa.CheckConstraint("severity IN ('low', 'medium', 'high', 'critical')", name="anomaly_severity"),
        sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="anomaly_status"),
    )
    op.create_index("anomalies_newest_first", "anomalies", [sa.text("detected_at DESC")])
    op.create_table(
        "metering_snapshots",
        sa.Column("taken_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("active_customers", sa.Integer, nullable=False),
        sa.Column("watermark_age_p50_ms", sa.BigInteger),
        sa.Column("watermark_age_max_ms", sa.BigInteger),
        sa.Column("quarantined", sa.Integer, nullable=False),
    )
    op.add_column("stripe_events", sa.Column("trace_id", sa.String(32)))
    op.add_column(
        "collection_outbox", sa.Column("unavailable_retries", sa.Integer, nullable=False, server_default="0")
    )
    op.alter_column("collection_outbox", "unavailable_retries", server_default=None)
    op.drop_constraint("collection_outbox_status", "collection_outbox")
    op.create_check_constraint(
        "collection_outbox_status",
        "collection_outbox",
        "status IN ('pending', 'in_flight', 'action_required', 'processing', 'collected', 'failed')",
    )


def downgrade() -> None:
    op.drop_column("collection_outbox", "unavailable_retries")
    op.drop_column("stripe_events", "trace_id")
    op.drop_table("metering_snapshots")
    op.drop_constraint("collection_outbox_status", "collection_outbox")
    op.create_check_constraint(
        "collection_outbox_status", "collection_outbox", "status IN ('pending', 'in_flight', 'collected', 'failed')"
    )
    op.drop_table("anomalies")
    op.drop_table("reconciliation_discrepancies")
    op.drop_table("reconciliation_runs")
    op.drop_table("stripe_disputes")
    op.drop_table("stripe_payments")
