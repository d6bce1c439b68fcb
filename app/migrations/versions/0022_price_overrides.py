"""Per-customer prices: a subscription's overrides of its plan's charges, versioned and audited.

Each change is a new row (a set or a remove, effective from a moment); rows are never updated or
deleted, so the history of what a customer was charged stays readable. ``subscriptions.
has_price_overrides`` is set on the first override, so the billing run and the edge read no
overrides at all for the customers who never had one.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("has_price_overrides", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "price_overrides",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("subscription_id", UUID(as_uuid=True), sa.ForeignKey("subscriptions.id"), nullable=False),
        sa.Column("plan_version_id", UUID(as_uuid=True), sa.ForeignKey("plan_versions.id"), nullable=False),
        sa.Column("plan_charge_id", UUID(as_uuid=True), sa.ForeignKey("plan_charges.id"), nullable=False),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("terms", JSONB, nullable=False),
        sa.Column("before", JSONB, nullable=False),
        sa.Column("after", JSONB, nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("plan_change_id", UUID(as_uuid=True), sa.ForeignKey("plan_changes.id"), nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('set', 'remove')", name="price_overrides_action_known"),
    )
    op.create_index("ix_price_overrides_customer_id", "price_overrides", ["customer_id"])
    op.execute(
        "CREATE TRIGGER price_overrides_immutable BEFORE UPDATE OR DELETE ON price_overrides "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )


def downgrade() -> None:
    op.drop_table("price_overrides")
    op.drop_column("subscriptions", "has_price_overrides")
