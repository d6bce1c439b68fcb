"""Outbound webhook events: one row per thing that happened, written in that change's own
transaction, keyed once (``event_key``), with the resource's version at that moment.

``webhook_resource_versions`` numbers the events of each resource (1, 2, 3…), so a receiver that
gets them out of order can tell which is newest. ``fanned_out_at`` is set when the event has been
turned into one delivery per subscribed endpoint; the partial index finds those still waiting.

Revision ID: 0032
Revises: 0031
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("event_key", sa.Text(), nullable=False, unique=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("api_version", sa.Text(), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id")),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fanned_out_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("resource_version > 0", name="webhook_events_version"),
    )
    op.create_index(
        "webhook_events_waiting", "webhook_events", ["created_at"], postgresql_where=sa.text("fanned_out_at IS NULL")
    )
    op.create_index("webhook_events_created", "webhook_events", ["created_at", "id"])
    op.create_index("webhook_events_customer", "webhook_events", ["customer_id", "created_at"])
    op.create_table(
        "webhook_resource_versions",
        sa.Column("resource_type", sa.Text(), primary_key=True),
        sa.Column("resource_id", sa.Text(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_resource_versions")
    op.drop_table("webhook_events")
