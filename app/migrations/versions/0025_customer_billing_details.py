"""Customer billing details: legal name, address, tax id, tax exemption, invoice emails, locale.

Invoices, credit notes and emails are addressed with them (``customers.billing_details``).
``tax_exemption`` is ``none``, ``exempt`` or ``reverse_charge``; ``locale`` one of the locales
documents are written in; ``country`` an ISO 3166-1 alpha-2 code in capitals.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

TEXT_COLUMNS = ("legal_name", "address_line1", "address_line2", "city", "postal_code", "region", "tax_id")


def upgrade() -> None:
    for name in TEXT_COLUMNS:
        op.add_column("customers", sa.Column(name, sa.Text()))
    op.add_column("customers", sa.Column("country", sa.String(2)))
    op.add_column("customers", sa.Column("tax_exemption", sa.Text(), nullable=False, server_default="none"))
    op.add_column("customers", sa.Column("invoice_emails", ARRAY(sa.Text()), nullable=False, server_default="{}"))
    op.add_column("customers", sa.Column("locale", sa.Text(), nullable=False, server_default="en"))
    op.create_check_constraint("customers_country_code", "customers", "country ~ '^[A-Z]{2}$'")
    op.create_check_constraint(
        "customers_tax_exemption", "customers", "tax_exemption IN ('none', 'exempt', 'reverse_charge')"
    )
    op.create_check_constraint("customers_locale", "customers", "locale IN ('en', 'fr', 'de', 'es')")


def downgrade() -> None:
    for name in ("customers_locale", "customers_tax_exemption", "customers_country_code"):
        op.drop_constraint(name, "customers")
    for name in (*TEXT_COLUMNS, "country", "tax_exemption", "invoice_emails", "locale"):
        op.drop_column("customers", name)
