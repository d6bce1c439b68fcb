"""Metering: a meter may allow negative values (off by default), and a value waiting to be rolled
up is bounded as ingestion bounds it (at most 10^30 in magnitude and 30 decimal places: the
widest `TALLY_QUANTITY_MAX` and `TALLY_QUANTITY_MAX_PLACES` allow), so a value that slipped past
validation fails its own batch instead of every later usage read and billing run of its customer.

The check is NOT VALID: rows stored before it are not judged (they wait at most a roller's tick).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", sa.Column("allow_negative", sa.Boolean, nullable=False, server_default=sa.false()))
    op.execute(
        "ALTER TABLE usage_pending ADD CONSTRAINT usage_pending_value_bounded "
        "CHECK (abs(value) <= 1e30 AND scale(value) <= 30) NOT VALID"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE usage_pending DROP CONSTRAINT usage_pending_value_bounded")
    op.drop_column("meters", "allow_negative")
