"""Several subscriptions per customer, schema only: what was keyed by customer is keyed by subscription.

- ``subscriptions.customer_id`` is no longer unique (an index stays: most reads are by customer).
  A subscription added to a customer carries the request's ``idempotency_key`` (unique) and its
  hash, so a retried request adds it once; the first subscription, made with its customer, has none.
- ``subscription_phases``, ``plan_changes``, ``subscription_events``, ``trial_changes`` and
  ``rated_periods`` get a ``subscription_id`` (not null), backfilled from the customer's one
  subscription; the phases' key becomes ``(subscription_id, starts_at)`` and the rated periods'
  ``(subscription_id, period_start)`` (an index by customer keeps the reads by customer fast).
- ``invoices`` gets a ``subscription_id``, required of the kinds that bill a boundary of a
  subscription (``opening``, ``period``); ``one_off`` and ``commitment`` invoices name one when
  they bill one. The one-invoice-per-boundary key becomes ``(subscription_id, kind,
  period_start)``: two subscriptions of one customer close their periods independently.
- ``one_off_charges`` and ``minimum_spends`` get a nullable ``subscription_id``, backfilled.

The backfill writes issued invoices, which their trigger refuses; it is disabled for that one
statement (the column is new: nothing an invoice said changes).

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

REQUIRED = ("subscription_phases", "plan_changes", "subscription_events", "trial_changes", "rated_periods")
OPTIONAL = ("invoices", "one_off_charges", "minimum_spends")
UNBOUNDED = "kind NOT IN ('one_off', 'commitment')"


def _backfill(table: str) -> None:
    op.execute(
        f"UPDATE {table} t SET subscription_id = s.id FROM subscriptions s WHERE s.customer_id = t.customer_id"
    )


def upgrade() -> None:
    op.drop_constraint("subscriptions_customer_id_key", "subscriptions", type_="unique")
    op.create_index("ix_subscriptions_customer_id", "subscriptions", ["customer_id"])
    op.add_column("subscriptions", sa.Column("idempotency_key", sa.Text, nullable=True, unique=True))
    op.add_column("subscriptions", sa.Column("request_hash", sa.String, nullable=True))
    for table in (*REQUIRED, *OPTIONAL):
        op.add_column(
            table, sa.Column("subscription_id", UUID(as_uuid=True), sa.ForeignKey("subscriptions.id"), nullable=True)
        )
    op.execute("ALTER TABLE invoices DISABLE TRIGGER invoices_immutable")
    for table in (*REQUIRED, *OPTIONAL):
        _backfill(table)
    op.execute("ALTER TABLE invoices ENABLE TRIGGER invoices_immutable")
    for table in REQUIRED:
        op.alter_column(table, "subscription_id", nullable=False)
    for table in ("plan_changes", "subscription_events", "trial_changes"):
        op.create_index(f"ix_{table}_subscription_id", table, ["subscription_id"])

    op.drop_constraint("subscription_phases_pkey", "subscription_phases", type_="primary")
    op.create_primary_key("subscription_phases_pkey", "subscription_phases", ["subscription_id", "starts_at"])
    op.create_index("subscription_phases_by_customer", "subscription_phases", ["customer_id", "starts_at"])
    op.drop_constraint("rated_periods_pkey", "rated_periods", type_="primary")
    op.create_primary_key("rated_periods_pkey", "rated_periods", ["subscription_id", "period_start"])
    op.create_index("rated_periods_by_customer", "rated_periods", ["customer_id", "period_start"])

    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["subscription_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text(UNBOUNDED),
    )
    op.create_check_constraint(
        "invoices_boundary_has_subscription", "invoices", f"subscription_id IS NOT NULL OR NOT ({UNBOUNDED})"
    )


def downgrade() -> None:
    # With two subscriptions of one customer these fail (a customer key would no longer be
    # unique), as they should: such a database cannot go back.
    op.drop_constraint("invoices_boundary_has_subscription", "invoices", type_="check")
    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["customer_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text(UNBOUNDED),
    )
    op.drop_index("rated_periods_by_customer", table_name="rated_periods")
    op.drop_constraint("rated_periods_pkey", "rated_periods", type_="primary")
    op.create_primary_key("rated_periods_pkey", "rated_periods", ["customer_id", "period_start"])
    op.drop_index("subscription_phases_by_customer", table_name="subscription_phases")
    op.drop_constraint("subscription_phases_pkey", "subscription_phases", type_="primary")
    op.create_primary_key("subscription_phases_pkey", "subscription_phases", ["customer_id", "starts_at"])
    for table in ("plan_changes", "subscription_events", "trial_changes"):
        op.drop_index(f"ix_{table}_subscription_id", table_name=table)
    for table in (*REQUIRED, *OPTIONAL):
        op.drop_column(table, "subscription_id")
    op.drop_column("subscriptions", "request_hash")
    op.drop_column("subscriptions", "idempotency_key")
    op.drop_index("ix_subscriptions_customer_id", table_name="subscriptions")
    op.create_unique_constraint("subscriptions_customer_id_key", "subscriptions", ["customer_id"])
