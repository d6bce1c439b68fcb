"""Pricing models: flat fees per tier (in the tiers' JSON), stair steps, package rounding,
percentage charges (Lago's: rate, fixed fee and free events, per-event minimum and maximum), and a
plan version's proration convention ("exact" to the microsecond, or whole "day"s).

Existing rows keep today's meaning through the defaults: every package rounds up, every plan
prorates exactly.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

OLD_MODELS = ("per_unit", "graduated", "volume", "package")
MODELS = (*OLD_MODELS, "stair_step", "percentage")


def _models(models: tuple[str, ...]) -> None:
    op.drop_constraint("plan_charges_model_known", "plan_charges", type_="check")
    op.create_check_constraint("plan_charges_model_known", "plan_charges", f"model IN {models!r}")


def upgrade() -> None:
    _models(MODELS)
    op.add_column("plan_charges", sa.Column("rounding", sa.String, nullable=False, server_default="up"))
    for name in ("percentage_rate", "fixed_fee", "per_event_minimum", "per_event_maximum"):
        op.add_column("plan_charges", sa.Column(name, sa.Numeric(30, 12)))
    op.add_column("plan_charges", sa.Column("free_events", sa.BigInteger))
    op.create_check_constraint("plan_charges_rounding_known", "plan_charges", "rounding IN ('up', 'down')")
    op.create_check_constraint(
        "plan_charges_percentage_rate_in_range",
        "plan_charges",
        "percentage_rate IS NULL OR (percentage_rate >= 0 AND percentage_rate <= 100)",
    )
    op.add_column("plan_versions", sa.Column("proration", sa.String, nullable=False, server_default="exact"))
    op.create_check_constraint("plan_versions_proration_known", "plan_versions", "proration IN ('exact', 'day')")


def downgrade() -> None:
    # Charges of the new models mean nothing to the older code: refuse rather than reprice them.
    op.execute("""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM plan_charges WHERE model NOT IN ('per_unit', 'graduated', 'volume', 'package')
                     OR rounding <> 'up' OR tiers::text LIKE '%flat_fee%')
             OR EXISTS (SELECT 1 FROM plan_versions WHERE proration <> 'exact') THEN
            RAISE EXCEPTION 'plans use pricing models this downgrade would lose';
          END IF;
        END $$;
    """)
    op.drop_constraint("plan_versions_proration_known", "plan_versions", type_="check")
    op.drop_column("plan_versions", "proration")
    op.drop_constraint("plan_charges_percentage_rate_in_range", "plan_charges", type_="check")
    op.drop_constraint("plan_charges_rounding_known", "plan_charges", type_="check")
    for name in ("free_events", "per_event_maximum", "per_event_minimum", "fixed_fee", "percentage_rate", "rounding"):
        op.drop_column("plan_charges", name)
    _models(OLD_MODELS)
