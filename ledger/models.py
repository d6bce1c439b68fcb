"""Ledger tables: accounts, immutable transactions and postings, credit grants.

Amounts are integers in the currency's minor unit. A posting's amount is signed: debits are
positive, credits negative; every transaction's postings sum to zero (a deferred constraint
trigger enforces it at commit). An account's balance is the sum of its postings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Identity, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

CUSTOMER_ACCOUNT_KINDS = ("credits", "receivable")
SYSTEM_ACCOUNT_KINDS = (
    "usage_revenue",
    "subscription_revenue",
    "one_off_revenue",
    "tax_payable",
    "discounts",
    "promotions",
    "breakage",
    "stripe_clearing",
    "refunds",
    "adjustments",
    "bad_debt",
    "disputes",
    "bank",
)


class Account(SQLModel, table=True):
    """A customer's credits (a liability: credit-normal) or receivable (an asset), or a system
    account. System accounts keep no cached balance, so postings never lock their row."""

    __tablename__ = "ledger_accounts"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    kind: str
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    balance: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transactions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True), index=True))
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str
    reason: str = Field(sa_column=Column(Text, nullable=False))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    reverses_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(ForeignKey("ledger_transactions.id"), unique=True)
    )


class Posting(SQLModel, table=True):
    __tablename__ = "ledger_postings"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    transaction_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("ledger_transactions.id"), nullable=False, index=True)
    )
    account_id: uuid.UUID = Field(sa_column=Column(ForeignKey("ledger_accounts.id"), nullable=False, index=True))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    grant_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True), index=True))


class CreditGrant(SQLModel, table=True):
    """Credit a customer holds: consumed by priority, then earliest expiry (never last), then age.

    ``remaining`` is a cache of minus the sum of the grant's postings on the credits account;
    `tally ledger verify` recomputes it.
    """

    __tablename__ = "credit_grants"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    remaining: int = Field(sa_column=Column(BigInteger, nullable=False))
    priority: int = Field(sa_column=Column(Integer, nullable=False))
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    source: str
    reason: str = Field(sa_column=Column(Text, nullable=False))
    actor: str
    status: str
    transaction_id: uuid.UUID = Field(sa_column=Column(ForeignKey("ledger_transactions.id"), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Creation order, assigned by the database: "oldest first" must not depend on a random id
    # when two grants share a timestamp.
    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), nullable=False, unique=True)
    )


class Promotion(SQLModel, table=True):
    """A code customers redeem once each for a credit grant; ``redemptions`` never passes
    ``max_redemptions`` (a conditional increment, not a read-then-write)."""

    __tablename__ = "promotions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    code: str
    code_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    description: str
    credit_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    credit_expires_in_days: int | None = None
    max_redemptions: int | None = None
    redemptions: int = 0
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    active: bool = True
    actor: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PromotionRedemption(SQLModel, table=True):
    __tablename__ = "promotion_redemptions"

    promotion_id: uuid.UUID = Field(sa_column=Column(ForeignKey("promotions.id"), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False))
    grant_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    redeemed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AuditEntry(SQLModel, table=True):
    """One action a person (or a job) took on money or a customer: who, what, when, and the
    subject's state before and after it, written in the action's own transaction (so an action
    that rolls back leaves no entry, and none is ever missing). Append-only; ``id`` orders them."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("audit_log_customer", "customer_id", "id"),
        Index("audit_log_actor", "actor", "id"),
        Index("audit_log_recorded_at", "recorded_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    action: str = Field(sa_column=Column(Text, nullable=False))
    subject_type: str = Field(sa_column=Column(Text, nullable=False))
    subject_id: str = Field(sa_column=Column(Text, nullable=False))
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
