"""The Stripe customer of each Tally customer.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_customers",
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("stripe_customer_id", sa.Text, nullable=False, unique=True),
        sa.Column("default_payment_method", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stripe_customers")
