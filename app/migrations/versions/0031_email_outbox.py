"""The email outbox: one row per message, written in the business event's own transaction.

``message_key`` is the exactly-once key (``invoice-issued:<invoice id>``,
``payment-failed:<invoice id>:<attempt>``, ``payment-receipt:<invoice id>``,
``credit-note:<credit note id>``, a resend ``<key>:resend:<n>``). ``content`` holds the facts
the templates render (amounts in minor units, dates), fixed when the event happened, so a
message rendered twice says the same thing. ``status`` moves pending -> sending (a claim, leased
until ``lease_until``) -> sent | failed, or is ``skipped`` (no recipients, or too old to send).

Revision ID: 0031
Revises: 0030
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

KINDS = ("invoice_issued", "payment_failed", "payment_receipt", "credit_note")
STATUSES = ("pending", "sending", "sent", "failed", "skipped")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "email_messages",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("message_key", sa.Text(), nullable=False, unique=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("recipients", ARRAY(sa.Text()), nullable=False),
        sa.Column("locale", sa.Text(), nullable=False),
        sa.Column("refs", JSONB(), nullable=False),
        sa.Column("content", JSONB(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column("smtp_message_id", sa.Text()),
        sa.Column("resend_of", UUID(as_uuid=True), sa.ForeignKey("email_messages.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(_in("kind", KINDS), name="email_messages_kind"),
        sa.CheckConstraint(_in("status", STATUSES), name="email_messages_status"),
        sa.CheckConstraint("locale IN ('en', 'fr', 'de', 'es')", name="email_messages_locale"),
        sa.CheckConstraint("attempts >= 0", name="email_messages_attempts"),
    )
    # The sender's claim: what is due, oldest first (sent, failed and skipped rows are not indexed).
    op.create_index(
        "email_messages_due",
        "email_messages",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index("email_messages_customer", "email_messages", ["customer_id", "created_at"])
    op.create_index(
        "email_messages_failed", "email_messages", ["created_at"], postgresql_where=sa.text("status = 'failed'")
    )


def downgrade() -> None:
    op.drop_table("email_messages")
