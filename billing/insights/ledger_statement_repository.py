"""SQL of the ledger statement (:mod:`billing.insights.ledger_statement`): a customer's accounts, and
one account's transactions in ledger sequence with their running balance and cause."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

ACCOUNTS = text("""
SELECT kind, currency FROM ledger_accounts
WHERE customer_id = :customer_id AND kind = ANY(:kinds)
ORDER BY currency, kind
""")

# Each transaction's movement of the account, its running total (window over all of them, so a
# later page starts from the right balance), and what caused it: the invoice whose charge,
# credits, credit note or payment it is (or the invoice of the transaction it reverses), and the
# grant it created or drew on.
STATEMENT = text("""
WITH account AS (
  SELECT id FROM ledger_accounts WHERE customer_id = :customer_id AND kind = :kind AND currency = :currency
), moves AS (
  SELECT p.transaction_id, min(p.id) AS sequence, sum(p.amount) AS amount,
         (array_agg(p.grant_id ORDER BY p.id) FILTER (WHERE p.grant_id IS NOT NULL))[1] AS grant_id
  FROM ledger_postings p
  WHERE p.account_id = (SELECT id FROM account)
  GROUP BY p.transaction_id
), running AS (
  SELECT m.*, sum(m.amount) OVER (ORDER BY m.sequence) AS balance FROM moves m
)
SELECT r.sequence, r.amount, r.balance, t.id, t.kind, t.effective_at, t.recorded_at, t.reason, t.actor,
       coalesce(r.grant_id, created.id) AS grant_id, cause.invoice_id, cause.invoice_number
FROM running r
JOIN ledger_transactions t ON t.id = r.transaction_id
LEFT JOIN credit_grants created ON created.transaction_id = t.id
LEFT JOIN LATERAL (
  SELECT i.id AS invoice_id, i.number AS invoice_number
  FROM invoices i
  WHERE i.id = (
    SELECT found.invoice_id FROM (
      SELECT i2.id AS invoice_id, 1 AS rank FROM invoices i2
      WHERE i2.ledger_transaction_id IN (t.id, t.reverses_id) OR i2.credits_transaction_id IN (t.id, t.reverses_id)
      UNION ALL
      SELECT n.invoice_id, 2 FROM credit_notes n WHERE n.ledger_transaction_id IN (t.id, t.reverses_id)
      UNION ALL
      SELECT s.invoice_id, 3 FROM stripe_payments s WHERE s.ledger_transaction_id IN (t.id, t.reverses_id)
    ) AS found ORDER BY found.rank LIMIT 1
  )
) AS cause ON true
WHERE r.sequence > :after_sequence
ORDER BY r.sequence
LIMIT :limit
""")


async def accounts_of_kinds(session: AsyncSession, customer_id: uuid.UUID, kinds: list[str]) -> list[tuple[str, str]]:
    """The (kind, currency) of the customer's accounts of these kinds, by currency then kind."""
    rows = await session.execute(ACCOUNTS, {"customer_id": customer_id, "kinds": kinds})
    return [(kind, currency) for kind, currency in rows]


async def statement_rows(
    session: AsyncSession, customer_id: uuid.UUID, *, kind: str, currency: str, after_sequence: int, limit: int
) -> list[Any]:
    """The account's transactions after ``after_sequence``, oldest first, as :data:`STATEMENT` reads them."""
    params = {
        "customer_id": customer_id,
        "kind": kind,
        "currency": currency,
        "after_sequence": after_sequence,
        "limit": limit,
    }
    return list((await session.execute(STATEMENT, params)).mappings())
