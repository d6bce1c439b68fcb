"""Invoice documents: the buyer as invoiced, the due date, and the rendered PDFs.

``invoices.billing_details`` keeps the buyer's billing details as they stood at issue (a later
change of address never rewrites an issued invoice; NULL for invoices issued before this, which
fall back to the customer's current details). ``invoices.due_at`` is the issue date plus the
payment terms (NULL before this: the documents show the issue date). ``invoice_documents`` keeps
each rendered PDF once per (invoice, kind, locale), with its SHA-256: rendered on first request,
then always served from here.

Revision ID: 0027
Revises: 0026
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invoices", sa.Column("billing_details", JSONB()))
    op.add_column("invoices", sa.Column("due_at", sa.DateTime(timezone=True)))
    op.create_table(
        "invoice_documents",
        sa.Column("invoice_id", UUID(as_uuid=True), sa.ForeignKey("invoices.id"), primary_key=True),
        sa.Column("kind", sa.Text(), primary_key=True),
        sa.Column("locale", sa.Text(), primary_key=True),
        # The payment status the document shows: a paid invoice gets a document of its own.
        sa.Column("status", sa.Text(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('invoice')", name="invoice_documents_kind"),
        sa.CheckConstraint("locale IN ('en', 'fr', 'de', 'es')", name="invoice_documents_locale"),
    )


def downgrade() -> None:
    op.drop_table("invoice_documents")
    op.drop_column("invoices", "due_at")
    op.drop_column("invoices", "billing_details")
