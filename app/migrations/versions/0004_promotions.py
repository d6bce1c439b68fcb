"""Promotions and their redemptions.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String, nullable=False),
        sa.Column("code_key", sa.Text, nullable=False, unique=True),
        sa.Column("description", sa.String, nullable=False),
        sa.Column("credit_amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("credit_expires_in_days", sa.Integer),
        sa.Column("max_redemptions", sa.Integer),
        sa.Column("redemptions", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("credit_amount > 0", name="promotions_credit_positive"),
        sa.CheckConstraint(
            "max_redemptions IS NULL OR redemptions BETWEEN 0 AND max_redemptions", name="promotions_within_max"
        ),
    )
    op.create_table(
        "promotion_redemptions",
        sa.Column("promotion_id", UUID(as_uuid=True), sa.ForeignKey("promotions.id"), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("grant_id", UUID(as_uuid=True)),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("promotion_redemptions")
    op.drop_table("promotions")
