"""Checks every ledger invariant from the postings themselves (`tally ledger verify`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

CHECKS = {
    "unbalanced transaction": """
        SELECT t.id::text, coalesce(sum(p.amount), 0)::text || ' over ' || count(p.id) || ' postings'
        FROM ledger_transactions t LEFT JOIN ledger_postings p ON p.transaction_id = t.id
        GROUP BY t.id HAVING coalesce(sum(p.amount), 0) <> 0 OR count(p.id) < 2""",
    "posting in a foreign currency": """
        SELECT p.id::text, a.currency || ' posting in a ' || t.currency || ' transaction'
        FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id
        JOIN ledger_transactions t ON t.id = p.transaction_id WHERE a.currency <> t.currency""",
    "currency does not sum to zero": """
        SELECT a.currency, sum(p.amount)::text FROM ledger_postings p
        JOIN ledger_accounts a ON a.id = p.account_id GROUP BY a.currency HAVING sum(p.amount) <> 0""",
    "cached balance differs from postings": """
        SELECT a.id::text, 'cached ' || a.balance || ', postings ' || coalesce(sum(p.amount), 0)
        FROM ledger_accounts a LEFT JOIN ledger_postings p ON p.account_id = a.id
        WHERE a.customer_id IS NOT NULL GROUP BY a.id HAVING a.balance <> coalesce(sum(p.amount), 0)""",
    "grant remaining differs from postings": """
        SELECT g.id::text, 'cached ' || g.remaining || ', postings ' || coalesce(-sum(p.amount), 0)
        FROM credit_grants g LEFT JOIN ledger_postings p ON p.grant_id = g.id
        GROUP BY g.id HAVING g.remaining <> coalesce(-sum(p.amount), 0)""",
    "grant below zero or above its amount": """
        SELECT g.id::text, coalesce(-sum(p.amount), 0) || ' of ' || g.amount
        FROM credit_grants g LEFT JOIN ledger_postings p ON p.grant_id = g.id
        GROUP BY g.id HAVING coalesce(-sum(p.amount), 0) NOT BETWEEN 0 AND g.amount""",
}


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject} ({self.detail})"


async def verify(session: AsyncSession) -> list[Violation]:
    violations = []
    for check, sql in CHECKS.items():
        for subject, detail in await session.execute(text(sql)):
            violations.append(Violation(check, subject, detail))
    return violations
