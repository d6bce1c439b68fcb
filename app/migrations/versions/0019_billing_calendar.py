"""The billing calendar and trials: a subscription's periods anchored on a billing anchor (the
start of the calendar in effect, or a calendar day), weekly and quarterly plans, changes of
billing interval (each starts a calendar, kept on its phase), trials and their audited changes.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, column in (
        ("billing_anchor", sa.Column("billing_anchor", sa.String, nullable=False, server_default="anniversary")),
        ("trial_days", sa.Column("trial_days", sa.Integer, nullable=False, server_default="0")),
        ("trial_usage", sa.Column("trial_usage", sa.String, nullable=False, server_default="free")),
        (
            "trial_requires_payment_method",
            sa.Column("trial_requires_payment_method", sa.Boolean, nullable=False, server_default=sa.false()),
        ),
    ):
        op.add_column("plan_versions", column)
        op.alter_column("plan_versions", name, server_default=None)

    op.add_column("subscriptions", sa.Column("billing_anchor", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("billing_anchor_day", sa.SmallInteger))
    op.add_column("subscriptions", sa.Column("trial_ends_at", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("pending_billing_anchor", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("period_closes_at", sa.DateTime(timezone=True)))
    # Until now every period was anchored on the start; 28 days is the shortest period there was.
    op.execute(
        "UPDATE subscriptions SET billing_anchor = started_at, period_closes_at = invoiced_through + interval '28 days'"
    )
    op.alter_column("subscriptions", "billing_anchor", nullable=False)

    op.add_column("subscription_phases", sa.Column("billing_anchor", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE subscription_phases p SET billing_anchor = s.started_at FROM subscriptions s "
        "WHERE p.customer_id = s.customer_id AND p.starts_at = s.started_at"
    )

    op.create_table(
        "trial_changes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_trial_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trial_changes_customer_id", "trial_changes", ["customer_id"])


def downgrade() -> None:
    op.drop_table("trial_changes")
    op.drop_column("subscription_phases", "billing_anchor")
    for name in (
        "period_closes_at",
        "pending_billing_anchor",
        "trial_ends_at",
        "billing_anchor_day",
        "billing_anchor",
    ):
        op.drop_column("subscriptions", name)
    for name in ("trial_requires_payment_method", "trial_usage", "trial_days", "billing_anchor"):
        op.drop_column("plan_versions", name)
