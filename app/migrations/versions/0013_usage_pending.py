"""Metering: usage waiting to be rolled up. A batch of events appends its measurements here in
its own transaction instead of merging them into the shared hourly and daily rollup rows, which
made concurrent batches of the same customers wait on each other's commits; one roller folds them
into the rollups and the watermarks, and reads add what is still waiting.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_pending",
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("meter_id", UUID(as_uuid=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dimensions", JSONB, nullable=False),
        sa.Column("value", sa.Numeric),
        sa.Column("unique_value", sa.Text),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("usage_pending_customer", "usage_pending", ["customer_id"])
    # A queue: rows live half a second. Vacuum it after every 10,000 dead rows, not after a fifth
    # of a table that is nearly empty whenever autovacuum looks at it.
    op.execute(
        "ALTER TABLE usage_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,"
        " autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000)"
    )


def downgrade() -> None:
    waiting = op.get_bind().execute(sa.text("SELECT count(*) FROM usage_pending")).scalar_one()
    if waiting:
        raise RuntimeError(
            f"{waiting} measurements are still waiting to be rolled up: run `tally serve` until "
            "usage_pending is empty, then downgrade"
        )
    op.drop_table("usage_pending")
