"""Ledger: one round trip to post a transaction (lock, postings, cached balances).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The customer accounts a transaction moves are locked in one sorted FOR UPDATE (a fixed
    # order: concurrent transactions on the same accounts wait rather than deadlock), then the
    # postings are written and the cached balances moved, in the caller's transaction.
    op.execute("""
        CREATE FUNCTION ledger_post(p_transaction uuid, p_accounts uuid[], p_amounts bigint[], p_grants uuid[])
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM 1 FROM ledger_accounts
            WHERE id = ANY(p_accounts) AND customer_id IS NOT NULL ORDER BY id FOR UPDATE;
          INSERT INTO ledger_postings (transaction_id, account_id, amount, grant_id)
            SELECT p_transaction, leg.account_id, leg.amount, leg.grant_id
            FROM unnest(p_accounts, p_amounts, p_grants) AS leg(account_id, amount, grant_id);
          UPDATE ledger_accounts AS account SET balance = account.balance + moved.delta
            FROM (SELECT leg.account_id, sum(leg.amount) AS delta
                  FROM unnest(p_accounts, p_amounts) AS leg(account_id, amount) GROUP BY leg.account_id) AS moved
            WHERE account.id = moved.account_id AND account.customer_id IS NOT NULL;
        END $$;
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS ledger_post(uuid, uuid[], bigint[], uuid[])")
