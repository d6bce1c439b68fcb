"""Tokens: the `edge` role, which sends usage and checks entitlements and reads nothing else.

Revision ID: 0017
Revises: 0013
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ROLES = ("admin", "finance", "support", "viewer", "ingest", "customer")


def _allow(roles: tuple[str, ...]) -> None:
    op.drop_constraint("api_tokens_role_known", "api_tokens", type_="check")
    op.create_check_constraint("api_tokens_role_known", "api_tokens", f"role IN {roles!r}")


def upgrade() -> None:
    _allow((*ROLES, "edge"))


def downgrade() -> None:
    op.execute("DELETE FROM api_tokens WHERE role = 'edge'")  # a role the older code cannot read
    _allow(ROLES)
