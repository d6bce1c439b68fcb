"""The audit log: every money or customer action (who, what, when, before and after), written in
the action's own transaction; append-only, ordered by its identity.

Revision ID: 0040
Revises: 0039
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject_type", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.Text(), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True)),
        sa.Column("before", JSONB()),
        sa.Column("after", JSONB()),
    )
    op.create_index("audit_log_customer", "audit_log", ["customer_id", "id"])
    op.create_index("audit_log_actor", "audit_log", ["actor", "id"])
    op.create_index("audit_log_recorded_at", "audit_log", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("audit_log")
