"""Foundation: catalog, customers, subscriptions, API tokens, staff users, span store.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "meters",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.String, nullable=False, unique=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("unit", sa.String, nullable=False),
        sa.Column("event_type", sa.String, nullable=False, index=True),
        sa.Column("aggregation", sa.String, nullable=False),
        sa.Column("value_property", sa.String),
        sa.Column("group_by", JSONB, nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint(
            "aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest')",
            name="meters_aggregation_known",
        ),
    )
    op.create_table(
        "plans",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.String, nullable=False, unique=True),
        sa.Column("name", sa.String, nullable=False),
        _timestamp("created_at"),
    )
    op.create_table(
        "plan_versions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("plan_id", UUID(as_uuid=True), sa.ForeignKey("plans.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.String, nullable=False),
        sa.Column("base_fee", sa.Numeric(30, 12), nullable=False),
        sa.Column("pricing_hash", sa.String, nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("plan_id", "version"),
        sa.CheckConstraint("interval IN ('month', 'year')", name="plan_versions_interval_known"),
        sa.CheckConstraint("base_fee >= 0", name="plan_versions_base_fee_not_negative"),
    )
    op.create_table(
        "plan_charges",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("plan_version_id", UUID(as_uuid=True), sa.ForeignKey("plan_versions.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("meter_id", UUID(as_uuid=True), sa.ForeignKey("meters.id"), nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("unit_price", sa.Numeric(30, 12)),
        sa.Column("tiers", JSONB, nullable=False),
        sa.Column("package_size", sa.Numeric(30, 0)),
        sa.Column("package_price", sa.Numeric(30, 12)),
        sa.Column("included", sa.Numeric(30, 12), nullable=False),
        sa.Column("minimum", sa.Numeric(30, 12)),
        sa.Column("limit", sa.Numeric(30, 12)),
        sa.Column("where", JSONB, nullable=False),
        sa.UniqueConstraint("plan_version_id", "position"),
        sa.CheckConstraint(
            "model IN ('per_unit', 'graduated', 'volume', 'package')", name="plan_charges_model_known"
        ),
    )
    # Plan versions are immutable once written: pricing changes are new versions.
    op.execute("""
        CREATE FUNCTION tally_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% rows are immutable; write a new row instead', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
        END $$;
    """)
    for table in ("plan_versions", "plan_charges"):
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
        )
    op.create_table(
        "customers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("external_id", sa.String, nullable=False, unique=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("email", sa.String),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String, nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("status IN ('ACTIVE', 'PAST_DUE', 'SUSPENDED')", name="customers_status_known"),
    )
    op.create_index("customers_newest_first", "customers", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.execute(
        "CREATE INDEX customers_search_trgm ON customers USING gin "
        "((external_id || ' ' || name || ' ' || coalesce(email, '')) gin_trgm_ops)"
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False, unique=True),
        sa.Column("plan_version_id", UUID(as_uuid=True), sa.ForeignKey("plan_versions.id"), nullable=False),
        _timestamp("started_at"),
        _timestamp("created_at"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id")),
        sa.Column("label", sa.String),
        _timestamp("created_at"),
        _timestamp("revoked_at", nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'finance', 'support', 'viewer', 'ingest', 'customer')",
            name="api_tokens_role_known",
        ),
        sa.CheckConstraint(
            "(role = 'customer') = (customer_id IS NOT NULL)", name="api_tokens_customer_role_bound"
        ),
    )
    op.create_table(
        "staff_users",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.String, nullable=False, unique=True),
        sa.Column("password_hash", sa.String, nullable=False),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        _timestamp("locked_until", nullable=True),
        _timestamp("created_at"),
        sa.CheckConstraint(
            "role IN ('admin', 'finance', 'support', 'viewer')", name="staff_users_role_known"
        ),
    )
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        _timestamp("start_time"),
        sa.Column("duration_us", sa.BigInteger, nullable=False),
        sa.Column("attributes", JSONB, nullable=False),
        sa.Column("events", JSONB, nullable=False),
        sa.Column("links", JSONB, nullable=False),
    )
    op.create_index("spans_newest_first", "spans", [sa.text("start_time DESC")])


def downgrade() -> None:
    for table in (
        "spans", "staff_users", "api_tokens", "subscriptions", "customers",
        "plan_charges", "plan_versions", "plans", "meters",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS tally_refuse_change()")
