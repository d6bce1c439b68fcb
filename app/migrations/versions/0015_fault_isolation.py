"""Fault isolation: a customer whose invoice could not be issued is remembered with the error
and retried with backoff (``billing_failures``); a Stripe event whose processing failed keeps
its attempts and when it is tried next.

Revision ID: 0015
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_failures",
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("trace_id", sa.String(32)),
    )
    op.add_column("stripe_events", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("stripe_events", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("stripe_events", "next_attempt_at")
    op.drop_column("stripe_events", "attempts")
    op.drop_table("billing_failures")
