"""Billing: subscription phases and plan changes, invoices, lines, the gapless number, rated periods.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _version_reference(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, UUID(as_uuid=True), sa.ForeignKey("plan_versions.id"), nullable=nullable)


def upgrade() -> None:
    op.add_column("subscriptions", _version_reference("pending_plan_version_id", nullable=True))
    op.add_column("subscriptions", _timestamp("pending_change_at", nullable=True))
    op.add_column("subscriptions", _timestamp("invoiced_through", nullable=True))
    op.create_table(
        "plan_changes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        _version_reference("from_plan_version_id"),
        _version_reference("to_plan_version_id"),
        sa.Column("timing", sa.String, nullable=False),
        _timestamp("effective_at"),
        _timestamp("period_start"),
        _timestamp("period_end"),
        sa.Column("prorations", JSONB, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        _timestamp("requested_at"),
        sa.CheckConstraint("timing IN ('IMMEDIATELY', 'PERIOD_END')", name="plan_changes_timing_known"),
        sa.CheckConstraint("status IN ('applied', 'scheduled', 'canceled')", name="plan_changes_status_known"),
    )
    op.create_index("ix_plan_changes_customer_id", "plan_changes", ["customer_id"])
    op.create_table(
        "subscription_phases",
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        _timestamp("starts_at"),
        _version_reference("plan_version_id"),
        sa.Column("plan_change_id", UUID(as_uuid=True)),
        sa.PrimaryKeyConstraint("customer_id", "starts_at"),
    )
    op.execute(
        "INSERT INTO subscription_phases (customer_id, starts_at, plan_version_id) "
        "SELECT customer_id, started_at, plan_version_id FROM subscriptions"
    )
    op.create_table(
        "invoices",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False, unique=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _timestamp("period_start"),
        _timestamp("period_end"),
        sa.Column("subtotal", sa.BigInteger, nullable=False),
        sa.Column("credits_applied", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        _timestamp("issued_at"),
        sa.Column("ledger_transaction_id", UUID(as_uuid=True)),
        sa.Column("credits_transaction_id", UUID(as_uuid=True)),
        sa.Column("trace_id", sa.String(32)),
        sa.UniqueConstraint("customer_id", "kind", "period_start"),
        sa.CheckConstraint("kind IN ('opening', 'period')", name="invoices_kind_known"),
        sa.CheckConstraint("status IN ('issued', 'paid', 'void', 'uncollectible')", name="invoices_status_known"),
        sa.CheckConstraint(
            "subtotal = total AND credits_applied >= 0 AND amount_due = greatest(total - credits_applied, 0)",
            name="invoices_totals_add_up",
        ),
    )
    op.create_index("invoices_newest_first", "invoices", ["customer_id", sa.text("number DESC")])
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("plan_version_id", UUID(as_uuid=True)),
        sa.Column("plan_charge_id", UUID(as_uuid=True)),
        sa.Column("meter_id", UUID(as_uuid=True)),
        sa.Column("dimensions", JSONB, nullable=False),
        sa.Column("quantity", sa.Numeric),
        sa.Column("unit_price", sa.Numeric),
        sa.Column("amount_exact", sa.Numeric, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        _timestamp("service_start"),
        _timestamp("service_end"),
        sa.CheckConstraint(
            "kind IN ('base_fee', 'usage', 'proration', 'late_usage')", name="invoice_lines_kind_known"
        ),
    )
    op.create_table(
        "invoice_number_counter",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("last_number", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO invoice_number_counter (id, last_number) VALUES (1, 0)")
    op.create_table(
        "rated_periods",
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        _timestamp("period_start"),
        _timestamp("period_end"),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        _timestamp("rated_at"),
        sa.PrimaryKeyConstraint("customer_id", "period_start"),
    )
    # An issued invoice is a legal document: its amounts, number and lines never change. Only
    # its collection status moves (issued -> paid, void or uncollectible).
    op.execute("""
        CREATE FUNCTION invoices_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' OR (to_jsonb(NEW) - 'status') IS DISTINCT FROM (to_jsonb(OLD) - 'status') THEN
            RAISE EXCEPTION 'invoice % is issued: only its status may change', OLD.id
              USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          RETURN NEW;
        END $$;
    """)
    op.execute(
        "CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoices_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )


def downgrade() -> None:
    for table in ("rated_periods", "invoice_number_counter", "invoice_lines", "invoices"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS invoices_refuse_change()")
    op.drop_table("subscription_phases")
    op.drop_table("plan_changes")
    for column in ("invoiced_through", "pending_change_at", "pending_plan_version_id"):
        op.drop_column("subscriptions", column)
