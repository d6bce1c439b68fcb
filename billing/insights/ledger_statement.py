"""A customer's ledger as a statement: one of their accounts (the receivable, what they owe; or
their credits, what they hold), every transaction that moved it in ledger sequence, its debit or
credit, the running balance, and the invoice or credit grant that caused it.

The ledger sequence is the order postings were written (``ledger_postings.id``, a database
sequence): a transaction's place is its first posting's. ``effective_at`` may be back-dated and
``recorded_at`` may tie; the sequence never does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.errors import InvalidInput

STATEMENT_ACCOUNTS = ("receivable", "credits")

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


@dataclass(frozen=True)
class StatementEntry:
    """One transaction's movement of the account, minor units. ``debit`` and ``credit`` are
    never both non-zero; ``balance`` is the account's balance after it, in the account's own
    sense: what the customer owes (receivable) or holds (credits)."""

    sequence: int
    transaction_id: uuid.UUID
    kind: str
    effective_at: datetime
    recorded_at: datetime
    reason: str
    actor: str
    debit: int
    credit: int
    balance: int
    invoice_id: uuid.UUID | None
    invoice_number: int | None
    grant_id: uuid.UUID | None


async def statement_accounts(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[str, str]]:
    """The (kind, currency) of the customer's accounts a statement can show."""
    rows = await session.execute(ACCOUNTS, {"customer_id": customer_id, "kinds": list(STATEMENT_ACCOUNTS)})
    return [(kind, currency) for kind, currency in rows]


def entry_of(row: Any, kind: str) -> StatementEntry:
    amount, running = int(row["amount"]), int(row["balance"])
    return StatementEntry(
        sequence=int(row["sequence"]),
        transaction_id=row["id"],
        kind=row["kind"],
        effective_at=row["effective_at"],
        recorded_at=row["recorded_at"],
        reason=row["reason"],
        actor=row["actor"],
        debit=max(amount, 0),
        credit=max(-amount, 0),
        # Postings are debit-positive; the credits account is credit-normal (a liability).
        balance=running if kind == "receivable" else -running,
        invoice_id=row["invoice_id"],
        invoice_number=row["invoice_number"],
        grant_id=row["grant_id"],
    )


async def statement(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    account: str,
    currency: str,
    after_sequence: int = 0,
    limit: int,
) -> list[StatementEntry]:
    """The account's entries after ``after_sequence``, oldest first."""
    if account not in STATEMENT_ACCOUNTS:
        raise InvalidInput(f"one of {', '.join(STATEMENT_ACCOUNTS)}", field="account")
    params = {
        "customer_id": customer_id,
        "kind": account,
        "currency": currency,
        "after_sequence": after_sequence,
        "limit": limit,
    }
    return [entry_of(row, account) for row in (await session.execute(STATEMENT, params)).mappings()]
