"""Paid top-ups, auto-recharge and the low-balance alert.

- ``credit_purchases``: credits a customer buys, billed on a ``credit_purchase`` invoice (one
  ``credit_purchase`` line) and granted when that invoice is paid, keyed by the caller's
  idempotency key. ``origin`` says who asked: a person or app (``request``) or the customer's
  auto-recharge (``auto_recharge``). A partial unique index keeps at most one auto-recharge
  awaiting payment per customer, whatever races.
- ``credit_balance_settings``: per customer, the low-balance threshold and the auto-recharge
  (threshold, amount, monthly cap, the granted credits' priority and validity), with the
  low-balance alert's state (``balance_low``: fired for the current crossing, re-armed above).
- Invoices of kind ``credit_purchase`` bill no period boundary, like ``one_off`` and
  ``commitment`` ones.

Revision ID: 0036
Revises: 0035
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

# The kinds before this migration: those of 0021, 0029 and 0035 (interim).
INVOICE_KINDS = ("opening", "period", "one_off", "commitment", "interim")
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
    "discount",
)
UNBOUNDED = ("one_off", "commitment")


def _kinds(invoice_kinds: tuple[str, ...], line_kinds: tuple[str, ...], unbounded: tuple[str, ...]) -> None:
    op.drop_constraint("invoices_kind_known", "invoices", type_="check")
    op.create_check_constraint("invoices_kind_known", "invoices", f"kind IN {invoice_kinds!r}")
    op.drop_constraint("invoice_lines_kind_known", "invoice_lines", type_="check")
    op.create_check_constraint("invoice_lines_kind_known", "invoice_lines", f"kind IN {line_kinds!r}")
    condition = f"kind NOT IN {unbounded!r}"
    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["subscription_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text(f"kind NOT IN {(*unbounded, 'interim')!r}"),  # interim ones are numbered (0035)
    )
    op.drop_constraint("invoices_boundary_has_subscription", "invoices", type_="check")
    op.create_check_constraint(
        "invoices_boundary_has_subscription", "invoices", f"subscription_id IS NOT NULL OR NOT ({condition})"
    )


def _moment(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    _kinds((*INVOICE_KINDS, "credit_purchase"), (*LINE_KINDS, "credit_purchase"), (*UNBOUNDED, "credit_purchase"))
    op.create_table(
        "credit_purchases",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("expires_in_days", sa.Integer, nullable=True),
        sa.Column("origin", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=True),
        sa.Column("grant_id", UUID(as_uuid=True), sa.ForeignKey("credit_grants.id"), nullable=True),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        _moment("created_at", nullable=False),
        _moment("settled_at"),
        sa.CheckConstraint("amount > 0", name="credit_purchases_amount_positive"),
        sa.CheckConstraint("priority BETWEEN 0 AND 1000000", name="credit_purchases_priority_range"),
        sa.CheckConstraint("expires_in_days BETWEEN 1 AND 3660", name="credit_purchases_validity_range"),
        sa.CheckConstraint("origin IN ('request', 'auto_recharge')", name="credit_purchases_origin_known"),
        sa.CheckConstraint("status IN ('awaiting_payment', 'paid', 'failed')", name="credit_purchases_status_known"),
    )
    op.create_index("credit_purchases_by_customer", "credit_purchases", ["customer_id", "created_at"])
    op.create_index(
        "credit_purchases_one_recharge_in_flight",
        "credit_purchases",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("origin = 'auto_recharge' AND status = 'awaiting_payment'"),
    )
    op.create_index(
        "credit_purchases_by_invoice",
        "credit_purchases",
        ["invoice_id"],
        unique=True,
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )
    op.create_table(
        "credit_balance_settings",
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("low_balance_threshold", sa.BigInteger, nullable=True),
        sa.Column("recharge_enabled", sa.Boolean, nullable=False),
        sa.Column("recharge_threshold", sa.BigInteger, nullable=True),
        sa.Column("recharge_amount", sa.BigInteger, nullable=True),
        sa.Column("recharge_monthly_cap", sa.BigInteger, nullable=True),
        sa.Column("recharge_priority", sa.Integer, nullable=False),
        sa.Column("recharge_expires_in_days", sa.Integer, nullable=True),
        sa.Column("balance_low", sa.Boolean, nullable=False),
        sa.Column("balance_low_crossings", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
        _moment("updated_at", nullable=False),
        sa.CheckConstraint("low_balance_threshold >= 0", name="credit_balance_settings_low_not_negative"),
        sa.CheckConstraint("recharge_threshold >= 0", name="credit_balance_settings_threshold_not_negative"),
        sa.CheckConstraint("recharge_amount > 0", name="credit_balance_settings_amount_positive"),
        sa.CheckConstraint("recharge_monthly_cap >= recharge_amount", name="credit_balance_settings_cap_holds_one"),
        sa.CheckConstraint(
            "NOT recharge_enabled OR (recharge_threshold IS NOT NULL AND recharge_amount IS NOT NULL "
            "AND recharge_monthly_cap IS NOT NULL)",
            name="credit_balance_settings_recharge_complete",
        ),
    )


def downgrade() -> None:
    op.drop_table("credit_balance_settings")
    op.drop_table("credit_purchases")
    _kinds(INVOICE_KINDS, LINE_KINDS, UNBOUNDED)
