"""Usage and spend alerts: what to watch (``usage_alerts``) and each threshold crossed
(``usage_alert_firings``), plus the ``usage_alert`` email kind.

An alert belongs to one customer or to one plan (every customer subscribed to it). It watches a
meter's usage in the period or the period's running amount in a currency, at up to ten thresholds,
absolute or percentages (of the meter's entitlement limit, or of ``spend_base`` in minor units).
A firing is unique per (alert, customer, period start, threshold): the roller's evaluation inserts
it ``ON CONFLICT DO NOTHING``, so concurrent roll-ups fire each threshold once per period.

Revision ID: 0034
Revises: 0033
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

KINDS_BEFORE = ("invoice_issued", "payment_failed", "payment_receipt", "credit_note")
KINDS_AFTER = (*KINDS_BEFORE, "usage_alert")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "usage_alerts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id")),
        sa.Column("plan_id", UUID(as_uuid=True), sa.ForeignKey("plans.id")),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("meter_id", UUID(as_uuid=True), sa.ForeignKey("meters.id")),
        sa.Column("currency", sa.String(3)),
        sa.Column("threshold_unit", sa.Text(), nullable=False),
        sa.Column("spend_base", sa.BigInteger()),
        sa.Column("thresholds", ARRAY(sa.Numeric(30, 12)), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("(customer_id IS NULL) <> (plan_id IS NULL)", name="usage_alerts_one_owner"),
        sa.CheckConstraint("metric IN ('usage', 'spend')", name="usage_alerts_metric"),
        sa.CheckConstraint("threshold_unit IN ('absolute', 'percent')", name="usage_alerts_unit"),
        sa.CheckConstraint("metric <> 'usage' OR meter_id IS NOT NULL", name="usage_alerts_usage_meter"),
        sa.CheckConstraint("metric <> 'spend' OR currency IS NOT NULL", name="usage_alerts_spend_currency"),
        sa.CheckConstraint(
            "metric <> 'spend' OR threshold_unit <> 'percent' OR spend_base > 0", name="usage_alerts_spend_base"
        ),
        sa.CheckConstraint("cardinality(thresholds) BETWEEN 1 AND 10", name="usage_alerts_thresholds"),
    )
    # A name once per owner among live alerts: a retried or concurrent create cannot make two.
    op.create_index(
        "usage_alerts_name",
        "usage_alerts",
        [sa.text("coalesce(customer_id, plan_id)"), "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_usage_alerts_customer_id", "usage_alerts", ["customer_id"])
    op.create_index("ix_usage_alerts_plan_id", "usage_alerts", ["plan_id"])
    op.create_table(
        "usage_alert_firings",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("usage_alerts.id"), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.Numeric(30, 12), nullable=False),
        sa.Column("threshold_value", sa.Numeric(30, 12), nullable=False),
        sa.Column("observed", sa.Numeric(30, 12), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("alert_id", "customer_id", "period_start", "threshold", name="usage_alert_firings_once"),
    )
    op.create_index("usage_alert_firings_customer", "usage_alert_firings", ["customer_id", "fired_at"])
    op.drop_constraint("email_messages_kind", "email_messages", type_="check")
    op.create_check_constraint("email_messages_kind", "email_messages", _in("kind", KINDS_AFTER))


def downgrade() -> None:
    op.execute("DELETE FROM email_messages WHERE kind = 'usage_alert'")
    op.drop_constraint("email_messages_kind", "email_messages", type_="check")
    op.create_check_constraint("email_messages_kind", "email_messages", _in("kind", KINDS_BEFORE))
    op.drop_table("usage_alert_firings")
    op.drop_table("usage_alerts")
