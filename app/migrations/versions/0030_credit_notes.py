"""Credit notes: immutable documents that correct an issued invoice, numbered in their own gapless
series (``CN-000001``), with their lines (each against one invoice line) and the refund outbox that
sends a ``REFUND`` note's money back to the card through Stripe.

A note's row never changes but for its status (a refund's progress); its lines never change. The
refund outbox is written in the note's own transaction, so no refund is ever forgotten.
``credit_note_documents`` keeps each note's PDF per locale as first rendered, never rewritten.

Revision ID: 0030
Revises: 0029
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_note_number_counter",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("last_number", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO credit_note_number_counter (id, last_number) VALUES (1, 0)")
    op.create_table(
        "credit_notes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False, unique=True),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("tax_amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("method", sa.String, nullable=False),
        sa.Column("reason", sa.String, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("ledger_transaction_id", UUID(as_uuid=True), nullable=False),
        sa.Column("grant_id", UUID(as_uuid=True), sa.ForeignKey("credit_grants.id"), nullable=True),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="credit_notes_amount_positive"),
        sa.CheckConstraint("tax_amount BETWEEN 0 AND amount", name="credit_notes_tax_within_amount"),
        sa.CheckConstraint("method IN ('REFUND', 'CREDIT', 'REDUCE_DUE')", name="credit_notes_method_known"),
        sa.CheckConstraint(
            "reason IN ('duplicate', 'product_unsatisfactory', 'order_change', 'fraudulent', 'other')",
            name="credit_notes_reason_known",
        ),
        sa.CheckConstraint(
            "status IN ('issued', 'refund_pending', 'refunded', 'refund_failed')", name="credit_notes_status_known"
        ),
    )
    op.create_index("credit_notes_by_customer", "credit_notes", ["customer_id", "issued_at"])
    op.create_index("credit_notes_by_invoice", "credit_notes", ["invoice_id"])
    op.create_table(
        "credit_note_lines",
        sa.Column("credit_note_id", UUID(as_uuid=True), sa.ForeignKey("credit_notes.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("invoice_id", UUID(as_uuid=True), nullable=False),
        sa.Column("invoice_line_position", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("revenue_account", sa.String, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id", "invoice_line_position"], ["invoice_lines.invoice_id", "invoice_lines.position"]
        ),
        sa.CheckConstraint("amount > 0", name="credit_note_lines_amount_positive"),
    )
    op.create_index("credit_note_lines_by_invoice_line", "credit_note_lines", ["invoice_id", "invoice_line_position"])
    op.create_table(
        "refund_outbox",
        sa.Column("credit_note_id", UUID(as_uuid=True), sa.ForeignKey("credit_notes.id"), primary_key=True),
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("payment_intent_id", sa.Text, sa.ForeignKey("stripe_payments.payment_intent_id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stripe_refund_id", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'in_flight', 'refunded', 'failed')", name="refund_outbox_status_known"
        ),
    )
    op.create_index("refund_outbox_due", "refund_outbox", ["status", "next_attempt_at"])
    op.execute("""
        CREATE FUNCTION tally_credit_note_status_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' OR (to_jsonb(NEW) - 'status') IS DISTINCT FROM (to_jsonb(OLD) - 'status') THEN
            RAISE EXCEPTION 'a credit note never changes but for its status' USING ERRCODE = 'restrict_violation';
          END IF;
          RETURN NEW;
        END $$;
    """)
    op.execute(
        "CREATE TRIGGER credit_notes_immutable BEFORE UPDATE OR DELETE ON credit_notes "
        "FOR EACH ROW EXECUTE FUNCTION tally_credit_note_status_only()"
    )
    op.execute(
        "CREATE TRIGGER credit_note_lines_immutable BEFORE UPDATE OR DELETE ON credit_note_lines "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )
    op.create_table(
        "credit_note_documents",
        sa.Column("credit_note_id", UUID(as_uuid=True), sa.ForeignKey("credit_notes.id"), primary_key=True),
        sa.Column("locale", sa.Text, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
        sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("locale IN ('en', 'fr', 'de', 'es')", name="credit_note_documents_locale"),
    )
    op.execute(
        "CREATE TRIGGER credit_note_documents_immutable BEFORE UPDATE OR DELETE ON credit_note_documents "
        "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
    )


def downgrade() -> None:
    op.drop_table("credit_note_documents")
    op.drop_table("refund_outbox")
    op.drop_table("credit_note_lines")
    op.drop_table("credit_notes")
    op.execute("DROP FUNCTION IF EXISTS tally_credit_note_status_only()")
    op.drop_table("credit_note_number_counter")
