"""Spend authorizations: an amount of money held for a customer before it is spent, against what
their credits still cover and, when they have one, their spend cap per billing period.

They share ``usage_authorizations`` with the holds of a meter's quantity, so one idempotency key
names one request of a customer whatever it holds. A money hold has no meter and no quantity but
an amount (minor units) and a currency; its ``used``, ``usage_limit``, ``remaining`` and
``reserved`` are minor units too (spent so far in the period, the spend cap, what remains after it,
what live money holds held). ``credit_balance_settings.spend_cap`` is the cap: the most a period
may charge beyond the credits (minor units of the customer's currency).

Also: finished webhook deliveries are pruned after ``TALLY_WEBHOOK_RETENTION_DAYS`` (their
attempts with them); the index finds them by their last activity.

Revision ID: 0038
Revises: 0037
"""

import sqlalchemy as sa
from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("meter_id", "quantity", "used", "reserved"):
        op.alter_column("usage_authorizations", column, nullable=True)
    op.add_column("usage_authorizations", sa.Column("amount", sa.BigInteger()))
    op.add_column("usage_authorizations", sa.Column("currency", sa.String(3)))
    op.add_column("usage_authorizations", sa.Column("credits_available", sa.BigInteger()))
    op.create_check_constraint(
        "usage_authorizations_holds_one_thing",
        "usage_authorizations",
        "(meter_id IS NOT NULL AND quantity IS NOT NULL AND used IS NOT NULL AND reserved IS NOT NULL "
        "AND amount IS NULL AND currency IS NULL) OR "
        "(meter_id IS NULL AND quantity IS NULL AND amount > 0 AND currency IS NOT NULL "
        "AND used IS NOT NULL AND reserved IS NOT NULL AND credits_available IS NOT NULL)",
    )
    op.create_index(
        "usage_authorizations_live_spend",
        "usage_authorizations",
        ["customer_id", "expires_at"],
        postgresql_where=sa.text("allowed AND settled_at IS NULL AND meter_id IS NULL"),
    )
    op.create_index(
        "webhook_deliveries_finished",
        "webhook_deliveries",
        [sa.text("coalesce(last_attempt_at, created_at)")],
        postgresql_where=sa.text("status IN ('delivered', 'failed')"),
    )
    op.add_column("credit_balance_settings", sa.Column("spend_cap", sa.BigInteger()))
    op.create_check_constraint("credit_balance_settings_spend_cap_positive", "credit_balance_settings", "spend_cap > 0")


def downgrade() -> None:
    op.drop_index("webhook_deliveries_finished", "webhook_deliveries")
    op.drop_constraint("credit_balance_settings_spend_cap_positive", "credit_balance_settings")
    op.drop_column("credit_balance_settings", "spend_cap")
    op.execute("DELETE FROM usage_authorizations WHERE meter_id IS NULL")
    op.drop_index("usage_authorizations_live_spend", "usage_authorizations")
    op.drop_constraint("usage_authorizations_holds_one_thing", "usage_authorizations")
    for column in ("amount", "currency", "credits_available"):
        op.drop_column("usage_authorizations", column)
    for column in ("meter_id", "quantity", "used", "reserved"):
        op.alter_column("usage_authorizations", column, nullable=False)
