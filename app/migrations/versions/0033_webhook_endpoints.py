"""Outbound webhook endpoints and their deliveries.

``webhook_endpoints``: where events go (an http(s) URL), which types (``event_types``; NULL for
every type), whether it is on, and its signing secret in Standard Webhooks form (``whsec_…``);
after a rotation the previous secret still signs until ``previous_secret_until`` (the overlap).
``consecutive_failures`` and ``failing_since`` count the attempts failed since the last success,
for the auto-disable rule. ``idempotency_key`` makes a retried create create one endpoint.

``webhook_deliveries``: one row per (endpoint, event), unique, so fanning an event out twice
queues nothing more; resending or replaying puts the same row back to ``pending``.
``webhook_delivery_attempts``: every POST, with its answer or error, latency and a bounded
excerpt of the body.

Revision ID: 0033
Revises: 0032
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("event_types", ARRAY(sa.Text())),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text()),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True)),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("idempotency_key", sa.Text(), unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("url ~ '^https?://' AND length(url) <= 2048", name="webhook_endpoints_url"),
        sa.CheckConstraint("length(description) <= 500", name="webhook_endpoints_description"),
        sa.CheckConstraint("secret LIKE 'whsec_%'", name="webhook_endpoints_secret"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("endpoint_id", UUID(as_uuid=True), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", UUID(as_uuid=True), sa.ForeignKey("webhook_events.id"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_response_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_once"),
        sa.CheckConstraint("status IN ('pending', 'sending', 'delivered', 'failed')", name="webhook_deliveries_status"),
    )
    op.create_index(
        "webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index("webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "created_at", "id"])
    op.create_table(
        "webhook_delivery_attempts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "delivery_id", UUID(as_uuid=True), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=False, server_default=""),
        sa.CheckConstraint("length(response_excerpt) <= 1024", name="webhook_delivery_attempts_excerpt"),
    )
    op.create_index("webhook_delivery_attempts_delivery", "webhook_delivery_attempts", ["delivery_id", "attempted_at"])


def downgrade() -> None:
    op.drop_table("webhook_delivery_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
