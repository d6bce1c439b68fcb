"""Usage charged in advance (seats): a charge billed at the period's start from its meter's value
then, topped up when the value rises, and the keys that bill each of those once.

- ``plan_charges.billed``: ``in_arrears`` (the default, every charge before this) or
  ``in_advance`` (only on a ``latest`` or ``max`` meter; the catalog checks it).
- ``advance_charge_bills``: one row per amount an in-advance charge billed for a period: the bill
  at its start (``advance``), each rise (``top_up``), each part it credits or charges again when
  the subscription is paused, canceled or changes plan (``credit``, ``charge``). Unique on
  (customer, charge, period start, moment, kind), written in the transaction of the invoice that
  bills it, so a retried billing run can never bill one twice; rows never change.
- Invoice lines of kinds ``advance`` (the bill at a period's start) and ``advance_proration``
  (top-ups and credits).

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

# The line kinds before this migration: those of 0005 and 0021.
LINE_KINDS = ("base_fee", "usage", "proration", "late_usage", "one_off", "minimum_spend", "commitment")
NEW_LINE_KINDS = ("advance", "advance_proration")


def _line_kinds(kinds: tuple[str, ...]) -> None:
    op.drop_constraint("invoice_lines_kind_known", "invoice_lines", type_="check")
    op.create_check_constraint("invoice_lines_kind_known", "invoice_lines", f"kind IN {kinds!r}")


def upgrade() -> None:
    op.add_column("plan_charges", sa.Column("billed", sa.String, nullable=False, server_default="in_arrears"))
    op.create_check_constraint("plan_charges_billed_known", "plan_charges", "billed IN ('in_arrears', 'in_advance')")
    _line_kinds((*LINE_KINDS, *NEW_LINE_KINDS))
    op.create_table(
        "advance_charge_bills",
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("plan_charge_id", UUID(as_uuid=True), sa.ForeignKey("plan_charges.id"), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("plan_version_id", UUID(as_uuid=True), sa.ForeignKey("plan_versions.id"), nullable=False),
        sa.Column("previous_quantity", sa.Numeric, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("share", sa.Numeric, nullable=False),
        sa.Column("amount_exact", sa.Numeric, nullable=False),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "plan_charge_id", "period_start", "effective_at", "kind"),
        sa.CheckConstraint(
            "kind IN ('advance', 'top_up', 'credit', 'charge')", name="advance_charge_bills_kind_known"
        ),
    )
    op.execute(
        "CREATE TRIGGER advance_charge_bills_immutable BEFORE UPDATE OR DELETE ON advance_charge_bills "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )


def downgrade() -> None:
    op.drop_table("advance_charge_bills")
    _line_kinds(LINE_KINDS)
    op.drop_constraint("plan_charges_billed_known", "plan_charges", type_="check")
    op.drop_column("plan_charges", "billed")
