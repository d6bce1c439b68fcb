"""Metering: when each waiting measurement was counted. A measurement replayed from the quarantine
keeps its event's first arrival as `received_at` (it is judged as of then), so the roll-up backlog
measured from `received_at` looked minutes or days old right after a replay; the backlog's age is
now measured from `counted_at`. Rows already waiting get the time of this migration (the roller
folds them within a tick).

Console users: `disabled_at`, set by `tally user disable`; a disabled user cannot sign in.

Revision ID: 0039
Revises: 0038
"""

import sqlalchemy as sa
from alembic import op

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "usage_pending",
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.add_column("staff_users", sa.Column("disabled_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("staff_users", "disabled_at")
    op.drop_column("usage_pending", "counted_at")
