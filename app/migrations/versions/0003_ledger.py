"""Ledger: accounts, immutable balanced transactions and postings, credit grants.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True)),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance", sa.BigInteger),
        _timestamp("created_at"),
        sa.CheckConstraint("(customer_id IS NULL) = (balance IS NULL)", name="ledger_accounts_cached_balance"),
    )
    op.execute(
        "CREATE UNIQUE INDEX ledger_accounts_one_per_owner ON ledger_accounts "
        "(coalesce(customer_id, '00000000-0000-0000-0000-000000000000'::uuid), kind, currency)"
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True)),
        _timestamp("effective_at"),
        _timestamp("recorded_at"),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("reverses_id", UUID(as_uuid=True), sa.ForeignKey("ledger_transactions.id"), unique=True),
        sa.CheckConstraint("length(btrim(reason)) > 0", name="ledger_transactions_reason_given"),
    )
    op.create_index("ix_ledger_transactions_customer_id", "ledger_transactions", ["customer_id"])
    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", UUID(as_uuid=True), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("grant_id", UUID(as_uuid=True)),
        sa.CheckConstraint("amount <> 0", name="ledger_postings_not_zero"),
    )
    op.create_index("ix_ledger_postings_transaction_id", "ledger_postings", ["transaction_id"])
    op.create_index("ix_ledger_postings_account_id", "ledger_postings", ["account_id"])
    op.create_index("ix_ledger_postings_grant_id", "ledger_postings", ["grant_id"])
    op.create_table(
        "credit_grants",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        _timestamp("effective_at"),
        _timestamp("expires_at", nullable=True),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("transaction_id", UUID(as_uuid=True), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        _timestamp("created_at"),
        sa.Column("sequence", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.CheckConstraint("amount > 0 AND remaining BETWEEN 0 AND amount", name="credit_grants_remaining_in_range"),
        sa.CheckConstraint("status IN ('active', 'expired', 'voided')", name="credit_grants_status_known"),
    )
    op.create_index("ix_credit_grants_customer_id", "credit_grants", ["customer_id"])
    # Every transaction balances to zero, has two postings or more, all in its currency:
    # checked at commit, so a transaction's postings can be written one by one.
    op.execute("""
        CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE total numeric; postings integer; foreign_currency integer;
        BEGIN
          SELECT coalesce(sum(p.amount), 0), count(*), count(*) FILTER (WHERE a.currency <> t.currency)
            INTO total, postings, foreign_currency
          FROM ledger_postings p
          JOIN ledger_accounts a ON a.id = p.account_id
          JOIN ledger_transactions t ON t.id = p.transaction_id
          WHERE p.transaction_id = NEW.transaction_id;
          IF total <> 0 OR postings < 2 OR foreign_currency > 0 THEN
            RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % postings, % in another currency)',
              NEW.transaction_id, total, postings, foreign_currency USING ERRCODE = 'check_violation';
          END IF;
          RETURN NULL;
        END $$;
    """)
    op.execute(
        "CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()"
    )
    for table in ("ledger_transactions", "ledger_postings"):
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tally_refuse_change()"
        )


def downgrade() -> None:
    for table in ("credit_grants", "ledger_postings", "ledger_transactions", "ledger_accounts"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS ledger_check_balanced()")
