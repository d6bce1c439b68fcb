"""Coupons and the discounts they give customers.

- ``coupons``: a code (unique, ignoring case, like promotions' codes) for a percentage
  (0 < percent_off <= 100) or a fixed amount off (``amount_off`` minor units of ``currency``), on
  the whole invoice or only on the lines of the meters named in ``applies_to`` (meter keys), for
  one invoice (``once``), ``duration_periods`` invoices (``repeating``) or ``forever``. Applied at
  most ``max_redemptions`` times (a conditional increment of ``redemptions``), until ``redeem_by``.
- ``customer_discounts``: a coupon applied to a customer, once per customer and coupon, keyed by
  the caller's idempotency key; ``periods`` is how many invoices it discounts (null: forever).
- ``discount_periods``: which invoice used which period of a discount, written in the invoice's
  own transaction: a period is used by exactly one invoice, whatever reruns or races.
- Invoice lines of kind ``discount`` (negative amounts).

Revision ID: 0029
Revises: 0028
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

# The line kinds before this migration: those of 0024.
LINE_KINDS = (
    "base_fee",
    "usage",
    "proration",
    "late_usage",
    "one_off",
    "minimum_spend",
    "commitment",
    "advance",
    "advance_proration",
)


def _line_kinds(kinds: tuple[str, ...]) -> None:
    op.drop_constraint("invoice_lines_kind_known", "invoice_lines", type_="check")
    op.create_check_constraint("invoice_lines_kind_known", "invoice_lines", f"kind IN {kinds!r}")


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("code_key", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("percent_off", sa.Numeric, nullable=True),
        sa.Column("amount_off", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("applies_to", ARRAY(sa.Text), nullable=False),
        sa.Column("duration", sa.String, nullable=False),
        sa.Column("duration_periods", sa.Integer, nullable=True),
        sa.Column("max_redemptions", sa.Integer, nullable=True),
        sa.Column("redemptions", sa.Integer, nullable=False),
        sa.Column("redeem_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="coupons_one_kind_of_discount"),
        sa.CheckConstraint("percent_off > 0 AND percent_off <= 100", name="coupons_percent_within_0_100"),
        sa.CheckConstraint("amount_off > 0", name="coupons_amount_positive"),
        sa.CheckConstraint("(amount_off IS NULL) = (currency IS NULL)", name="coupons_amount_has_currency"),
        sa.CheckConstraint("duration IN ('once', 'repeating', 'forever')", name="coupons_duration_known"),
        sa.CheckConstraint(
            "(duration = 'repeating') = (duration_periods IS NOT NULL) AND duration_periods >= 1",
            name="coupons_periods_when_repeating",
        ),
        sa.CheckConstraint(
            "redemptions >= 0 AND (max_redemptions IS NULL OR redemptions <= max_redemptions)",
            name="coupons_within_max",
        ),
    )
    op.create_table(
        "customer_discounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("coupon_id", UUID(as_uuid=True), sa.ForeignKey("coupons.id"), nullable=False),
        sa.Column("periods", sa.Integer, nullable=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String, nullable=True),
        sa.UniqueConstraint("customer_id", "coupon_id"),
        sa.UniqueConstraint("customer_id", "idempotency_key"),
        sa.CheckConstraint("status IN ('active', 'removed')", name="customer_discounts_status_known"),
        sa.CheckConstraint("periods >= 1", name="customer_discounts_periods_positive"),
    )
    op.create_table(
        "discount_periods",
        sa.Column("discount_id", UUID(as_uuid=True), sa.ForeignKey("customer_discounts.id"), nullable=False),
        sa.Column("period_number", sa.Integer, nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("discount_id", "period_number"),
        sa.UniqueConstraint("discount_id", "invoice_id"),
        sa.CheckConstraint("period_number >= 1", name="discount_periods_number_positive"),
        sa.CheckConstraint("amount >= 0", name="discount_periods_amount_not_negative"),
    )
    op.execute(
        "CREATE TRIGGER discount_periods_immutable BEFORE UPDATE OR DELETE ON discount_periods "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )
    _line_kinds((*LINE_KINDS, "discount"))


def downgrade() -> None:
    _line_kinds(LINE_KINDS)
    op.drop_table("discount_periods")
    op.drop_table("customer_discounts")
    op.drop_table("coupons")
