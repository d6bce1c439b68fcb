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

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.insights import ledger_statement_repository as repository
from ledger.errors import InvalidInput

STATEMENT_ACCOUNTS = ("receivable", "credits")


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
    return await repository.accounts_of_kinds(session, customer_id, list(STATEMENT_ACCOUNTS))


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
    rows = await repository.statement_rows(
        session, customer_id, kind=account, currency=currency, after_sequence=after_sequence, limit=limit
    )
    return [entry_of(row, account) for row in rows]
