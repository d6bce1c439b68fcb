"""Subscription lifecycle: cancel (now or at the period's end), resume a scheduled cancel, pause
and unpause.

A phase carries a status (ACTIVE, PAUSED, CANCELED) and the lifecycle event that started it; the
subscription row keeps what the hot paths read in one row (when it ends, since when it is paused);
``subscription_events`` is the audit, one row per request, its idempotency key unique; a plan
version says whether usage is still metered while paused or refused at ingestion.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscription_phases", sa.Column("status", sa.String, nullable=False, server_default="ACTIVE")
    )
    op.create_check_constraint(
        "subscription_phases_status_known", "subscription_phases", "status IN ('ACTIVE', 'PAUSED', 'CANCELED')"
    )
    op.add_column("subscription_phases", sa.Column("lifecycle_event_id", UUID(as_uuid=True)))
    op.add_column("subscriptions", sa.Column("cancel_at", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("canceled_at", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("cancel_reason", sa.Text))
    op.add_column("subscriptions", sa.Column("paused_at", sa.DateTime(timezone=True)))
    op.add_column("plan_versions", sa.Column("paused_usage", sa.String, nullable=False, server_default="meter"))
    op.create_check_constraint("plan_versions_paused_usage_known", "plan_versions", "paused_usage IN ('meter', 'refuse')")
    op.create_table(
        "subscription_events",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False, index=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("timing", sa.String),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("prorations", JSONB, nullable=False),
        sa.Column("invoice_ids", JSONB, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('CANCEL', 'RESUME', 'PAUSE', 'UNPAUSE')", name="subscription_events_kind_known"),
        sa.CheckConstraint("timing IN ('IMMEDIATELY', 'PERIOD_END')", name="subscription_events_timing_known"),
        sa.CheckConstraint("status IN ('applied', 'scheduled', 'revoked')", name="subscription_events_status_known"),
    )


def downgrade() -> None:
    op.drop_table("subscription_events")
    op.drop_constraint("plan_versions_paused_usage_known", "plan_versions", type_="check")
    op.drop_column("plan_versions", "paused_usage")
    for column in ("paused_at", "cancel_reason", "canceled_at", "cancel_at"):
        op.drop_column("subscriptions", column)
    op.drop_column("subscription_phases", "lifecycle_event_id")
    op.drop_constraint("subscription_phases_status_known", "subscription_phases", type_="check")
    op.drop_column("subscription_phases", "status")
