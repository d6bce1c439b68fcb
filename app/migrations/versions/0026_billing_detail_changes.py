"""The history of customers' billing details: one row per change, with who made it, when, and the
fields that changed, each before and after (``customers.billing_detail_changes``).

Revision ID: 0026
Revises: 0025
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_billing_detail_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("before", JSONB, nullable=False),
        sa.Column("after", JSONB, nullable=False),
    )
    op.create_index("customer_billing_detail_changes_by_customer", "customer_billing_detail_changes", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_table("customer_billing_detail_changes")
