"""Metering: daily rollups beside the hourly ones, so that a month reads about 30 rows per meter
and dimensions instead of 720; filled from the hourly rollups that exist.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_daily_rollups",
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("meter_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("day", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("dimensions", JSONB, primary_key=True),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("value_sum", sa.Numeric),
        sa.Column("value_max", sa.Numeric),
        sa.Column("latest_value", sa.Numeric),
        sa.Column("latest_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latest_event_id", sa.Text, nullable=False),
    )
    op.create_table(
        "usage_daily_unique_values",
        sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("meter_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("day", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("dimensions", JSONB, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
    )
    op.execute("""
        INSERT INTO usage_daily_rollups (customer_id, meter_id, day, dimensions, event_count, value_sum, value_max,
                                         latest_value, latest_at, latest_event_id)
        SELECT customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions, sum(event_count), sum(value_sum),
               max(value_max), (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id DESC))[1],
               max(latest_at), (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id DESC))[1]
        FROM usage_rollups
        GROUP BY customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions
    """)
    op.execute("""
        INSERT INTO usage_daily_unique_values (customer_id, meter_id, day, dimensions, value)
        SELECT DISTINCT customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions, value
        FROM usage_unique_values
    """)


def downgrade() -> None:
    op.drop_table("usage_daily_unique_values")
    op.drop_table("usage_daily_rollups")
