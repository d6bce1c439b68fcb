"""Threshold (progressive) invoicing: a plan version's ``invoice_threshold``, and ``interim``
invoices numbered per subscription and period.

An interim invoice bills a period's usage before the period closes, so several may share one
(subscription, period start): the boundary index no longer covers them, and their own unique
index keys each by its ``interim_sequence`` (1, 2, 3…), so two checks racing for the same
threshold crossing can write only one.

Revision ID: 0035
Revises: 0034
"""

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

KINDS = ("opening", "period", "one_off", "commitment")
BOUNDARY = "kind NOT IN ('one_off', 'commitment')"
BOUNDARY_WITHOUT_INTERIM = "kind NOT IN ('one_off', 'commitment', 'interim')"


def upgrade() -> None:
    op.add_column("plan_versions", sa.Column("invoice_threshold", sa.Numeric(30, 12)))
    op.create_check_constraint(
        "plan_versions_invoice_threshold_positive", "plan_versions", "invoice_threshold IS NULL OR invoice_threshold > 0"
    )
    op.drop_constraint("invoices_kind_known", "invoices", type_="check")
    op.create_check_constraint("invoices_kind_known", "invoices", f"kind IN {(*KINDS, 'interim')!r}")
    op.add_column("invoices", sa.Column("interim_sequence", sa.Integer()))
    op.create_check_constraint(
        "invoices_interim_sequence_known",
        "invoices",
        "(kind = 'interim') = (interim_sequence IS NOT NULL) AND (interim_sequence IS NULL OR interim_sequence > 0)",
    )
    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["subscription_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text(BOUNDARY_WITHOUT_INTERIM),
    )
    op.create_index(
        "invoices_one_interim_per_sequence",
        "invoices",
        ["subscription_id", "period_start", "interim_sequence"],
        unique=True,
        postgresql_where=sa.text("kind = 'interim'"),
    )


def downgrade() -> None:
    # With two interim invoices of one period this fails, as it should: the old index cannot hold them.
    op.drop_index("invoices_one_interim_per_sequence", table_name="invoices")
    op.drop_index("invoices_one_per_boundary", table_name="invoices")
    op.create_index(
        "invoices_one_per_boundary",
        "invoices",
        ["subscription_id", "kind", "period_start"],
        unique=True,
        postgresql_where=sa.text(BOUNDARY),
    )
    op.drop_constraint("invoices_interim_sequence_known", "invoices", type_="check")
    op.drop_column("invoices", "interim_sequence")
    op.drop_constraint("invoices_kind_known", "invoices", type_="check")
    op.create_check_constraint("invoices_kind_known", "invoices", f"kind IN {KINDS!r}")
    op.drop_constraint("plan_versions_invoice_threshold_positive", "plan_versions", type_="check")
    op.drop_column("plan_versions", "invoice_threshold")
