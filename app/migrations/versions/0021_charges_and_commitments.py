"""One-off charges, minimum spend and prepaid commitments.

- ``one_off_charges``: a fee invoiced at once (its own ``one_off`` invoice) or left pending for
  the customer's next invoice, which claims it (``status`` pending -> invoiced, ``invoice_id``).
- ``minimum_spends``: a subscription's own minimum spend per period, versioned by the moment it
  takes effect (a null amount goes back to the plan's); ``plan_versions.minimum_spend`` is the
  plan's.
- ``prepaid_commitments``: an amount invoiced now (a ``commitment`` invoice) and granted as
  credits from ``starts_at`` to ``ends_at``.
- Invoices of kinds ``one_off`` and ``commitment`` have no billing boundary: several may share a
  moment, so the one-invoice-per-boundary key becomes a partial unique index over the other
  kinds. Their exactly-once key is their charge's or commitment's own idempotency key.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# The kinds before this migration: those of 0005. Neither 0018 (a cancel's final invoice is a
# ``period`` invoice, its unused fee a ``proration`` line) nor 0020 adds one.
INVOICE_KINDS = ("opening", "period")
LINE_KINDS = ("base_fee", "usage", "proration", "late_usage")
NEW_INVOICE_KINDS = ("one_off", "commitment")
NEW_LINE_KINDS = ("one_off", "minimum_spend", "commitment")


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _customer() -> sa.Column:
    return sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False)


def _kinds(invoice_kinds: tuple[str, ...], line_kinds: tuple[str, ...]) -> None:
    op.drop_constraint("invoices_kind_known", "invoices", type_="check")
    op.create_check_constraint("invoices_kind_known", "invoices", f"kind IN {invoice_kinds!r}")
    op.drop_constraint("invoice_lines_kind_known", "invoice_lines", type_="check")
    op.create_check_constraint("invoice_lines_kind_known", "invoice_lines", f"kind IN {line_kinds!r}")


def upgrade() -> None:
    _kinds((*INVOICE_KINDS, *NEW_INVOICE_KINDS), (*LINE_KINDS, *NEW_LINE_KINDS))
    op.drop_constraint("invoices_customer_id_kind_period_start_key", "invoices", type_="unique")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["customer_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text("kind NOT IN ('one_off', 'commitment')"),
    )
    op.add_column("plan_versions", sa.Column("minimum_spend", sa.Numeric(30, 12), nullable=True))
    op.create_check_constraint(
        "plan_versions_minimum_spend_not_negative", "plan_versions", "minimum_spend IS NULL OR minimum_spend >= 0"
    )
    op.create_table(
        "one_off_charges",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        _customer(),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("unit_price", sa.Numeric, nullable=False),
        sa.Column("amount_exact", sa.Numeric, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("timing", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        # Deferred: the invoice claiming a charge claims it before the invoice row is written.
        sa.Column(
            "invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id", deferrable=True, initially="DEFERRED")
        ),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        _timestamp("created_at"),
        _timestamp("canceled_at", nullable=True),
        sa.Column("canceled_by", sa.String),
        sa.Column("cancel_reason", sa.Text),
        sa.Column("cancel_key", sa.Text, unique=True),
        sa.CheckConstraint("timing IN ('now', 'next_invoice')", name="one_off_charges_timing_known"),
        sa.CheckConstraint("status IN ('pending', 'invoiced', 'canceled')", name="one_off_charges_status_known"),
        sa.CheckConstraint("quantity > 0 AND unit_price >= 0 AND amount > 0", name="one_off_charges_amounts"),
        sa.CheckConstraint("length(btrim(description)) > 0", name="one_off_charges_description_given"),
    )
    op.create_index("one_off_charges_by_customer", "one_off_charges", ["customer_id", "created_at"])
    op.create_index(
        "one_off_charges_pending",
        "one_off_charges",
        ["customer_id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "minimum_spends",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        _customer(),
        sa.Column("amount", sa.Numeric(30, 12)),
        sa.Column("currency", sa.String(3), nullable=False),
        _timestamp("effective_at"),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        _timestamp("created_at"),
        sa.Column("sequence", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.CheckConstraint("amount IS NULL OR amount >= 0", name="minimum_spends_not_negative"),
    )
    op.create_index("minimum_spends_by_customer", "minimum_spends", ["customer_id", "effective_at"])
    op.create_table(
        "prepaid_commitments",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        _customer(),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _timestamp("starts_at"),
        _timestamp("ends_at"),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("grant_id", UUID(as_uuid=True), sa.ForeignKey("credit_grants.id")),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id")),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("amount > 0 AND ends_at > starts_at", name="prepaid_commitments_sensible"),
    )
    op.create_index("prepaid_commitments_by_customer", "prepaid_commitments", ["customer_id", "created_at"])


def downgrade() -> None:
    op.drop_table("prepaid_commitments")
    op.drop_table("minimum_spends")
    op.drop_table("one_off_charges")
    op.drop_constraint("plan_versions_minimum_spend_not_negative", "plan_versions", type_="check")
    op.drop_column("plan_versions", "minimum_spend")
    # Invoices of the new kinds are legal documents and are not deleted: downgrading with any
    # of them issued fails on the constraints below, as it should.
    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_unique_constraint(
        "invoices_customer_id_kind_period_start_key", "invoices", ["customer_id", "kind", "period_start"]
    )
    _kinds(INVOICE_KINDS, LINE_KINDS)
