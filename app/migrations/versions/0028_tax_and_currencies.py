"""Tax rates and plans priced in several currencies.

``tax_rates``: the catalog's rates, versioned and immutable like plan versions (a changed rate is
a new version; issued invoices keep a copy of what they applied in ``invoice_tax_lines``).
``customer_tax_rates``: rates assigned to a customer explicitly (instead of by their address).
``invoices.tax_amount``: all the tax of an invoice (the exclusive part is in its total).
``plan_versions.primary_currency``: a plan version has a sibling per currency option, with the
same version number; the plan's own currency is the primary one.

Revision ID: 0028
Revises: 0027
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tax_rates",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("rate", sa.Numeric(8, 4), nullable=False),
        sa.Column("inclusive", sa.Boolean, nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("key", "version"),
        sa.CheckConstraint("rate >= 0 AND rate < 100", name="tax_rates_rate_percent"),
        sa.CheckConstraint("country ~ '^[A-Z]{2}$'", name="tax_rates_country_code"),
    )
    op.execute(
        "CREATE TRIGGER tax_rates_immutable BEFORE UPDATE OR DELETE ON tax_rates "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )
    op.create_table(
        "customer_tax_rates",
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("tax_rate_key", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "invoice_tax_lines",
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("rate_key", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("rate", sa.Numeric(8, 4), nullable=False),
        sa.Column("inclusive", sa.Boolean, nullable=False),
        sa.Column("taxable_amount", sa.BigInteger, nullable=False),
        sa.Column("tax_amount", sa.BigInteger, nullable=False),
        sa.Column("reverse_charge", sa.Boolean, nullable=False),
        sa.CheckConstraint("NOT reverse_charge OR tax_amount = 0", name="invoice_tax_lines_reverse_charge_untaxed"),
    )
    op.add_column("invoices", sa.Column("tax_amount", sa.BigInteger, nullable=False, server_default="0"))
    # The total is the lines (the subtotal) plus the exclusive part of the tax.
    op.drop_constraint("invoices_totals_add_up", "invoices", type_="check")
    op.create_check_constraint(
        "invoices_totals_add_up",
        "invoices",
        "abs(total - subtotal) <= abs(tax_amount) AND credits_applied >= 0 "
        "AND amount_due = greatest(total - credits_applied, 0)",
    )
    op.add_column(
        "plan_versions", sa.Column("primary_currency", sa.Boolean, nullable=False, server_default=sa.true())
    )
    op.drop_constraint("plan_versions_plan_id_version_key", "plan_versions", type_="unique")
    op.create_unique_constraint(
        "plan_versions_plan_id_version_currency_key", "plan_versions", ["plan_id", "version", "currency"]
    )


def downgrade() -> None:
    op.drop_constraint("plan_versions_plan_id_version_currency_key", "plan_versions", type_="unique")
    # Refused while a plan has prices in several currencies (their versions share a number).
    op.create_unique_constraint("plan_versions_plan_id_version_key", "plan_versions", ["plan_id", "version"])
    op.drop_column("plan_versions", "primary_currency")
    op.drop_constraint("invoices_totals_add_up", "invoices", type_="check")
    op.create_check_constraint(
        "invoices_totals_add_up",
        "invoices",
        "subtotal = total AND credits_applied >= 0 AND amount_due = greatest(total - credits_applied, 0)",
    )
    op.drop_column("invoices", "tax_amount")
    op.drop_table("invoice_tax_lines")
    op.drop_table("customer_tax_rates")
    op.drop_table("tax_rates")
