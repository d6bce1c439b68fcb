"""Usage authorizations: a quantity of a meter held for a customer before it is used, so that
concurrent callers cannot pass a limit together. A row counts while it is allowed, unsettled and
unexpired (the partial index finds those of a customer's meter); refusals are kept too, so a
retried request with the same idempotency key is answered the same.

Revision ID: 0037
Revises: 0036
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_authorizations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("meter_id", UUID(as_uuid=True), sa.ForeignKey("meters.id"), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Numeric(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("used", sa.Numeric(), nullable=False),
        sa.Column("usage_limit", sa.Numeric()),
        sa.Column("remaining", sa.Numeric()),
        sa.Column("reserved", sa.Numeric(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.Column("settled_by_event", sa.Text()),
        sa.UniqueConstraint("customer_id", "idempotency_key", name="usage_authorizations_key"),
        sa.CheckConstraint("quantity > 0", name="usage_authorizations_quantity"),
    )
    op.create_index(
        "usage_authorizations_live",
        "usage_authorizations",
        ["customer_id", "meter_id", "expires_at"],
        postgresql_where=sa.text("allowed AND settled_at IS NULL"),
    )
    op.create_index("usage_authorizations_expiry", "usage_authorizations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("usage_authorizations")
