"""What the rest of Tally calls to move money in the ledger.

Every write is one balanced transaction with an idempotency key: the same key with the same
request returns the first result and writes nothing; the same key with another request is
refused (``IDEMPOTENCY_KEY_REUSED``). Services never commit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger import audit, repository
from ledger.errors import IdempotencyKeyReused, InvalidInput, NotFound
from ledger.models import Account, LedgerTransaction
from ledger.money import MAX_MINOR_UNITS, MINOR_UNIT_DIGITS, to_major

MAX_AMOUNT = MAX_MINOR_UNITS


@dataclass(frozen=True)
class Leg:
    account: Account
    amount: int  # debit positive, credit negative
    grant_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Entry:
    """What a transaction is, for whom, by whom and why; ``request`` is what its key protects."""

    kind: str
    currency: str
    customer_id: uuid.UUID | None
    effective_at: datetime
    actor: str
    reason: str
    idempotency_key: str
    request: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    reverses_id: uuid.UUID | None = None


def _request_hash(entry: Entry) -> str:
    document = json.dumps({"kind": entry.kind, **entry.request}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def check_amount(amount: int, *, field: str = "amount") -> int:
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidInput("must be greater than zero and at most 2^63-1 minor units", field=field)
    return amount


def check_reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise InvalidInput("say why: a reason is required", field="reason")
    return reason.strip()


async def transaction_by_key(session: AsyncSession, idempotency_key: str) -> LedgerTransaction | None:
    """The transaction an idempotency key made, if any: how a retried request finds its effect."""
    return await repository.transaction_by_key(session, idempotency_key)


def request_hash(entry: Entry) -> str:
    """Check the entry's key and reason and hash what its key protects."""
    if not entry.idempotency_key or not entry.idempotency_key.strip():
        raise InvalidInput("is required", field="idempotencyKey")
    check_reason(entry.reason)
    return _request_hash(entry)


def check_legs(currency: str, amounts: list[int]) -> None:
    """Refuse, before anything is posted, a currency Tally does not know (it has no minor unit to
    count in) and an amount beyond what a posting holds (BIGINT)."""
    if currency not in MINOR_UNIT_DIGITS:
        raise InvalidInput(f"unknown currency {currency!r}: nothing is posted in it", field="currency")
    if any(abs(amount) > MAX_AMOUNT for amount in amounts):
        raise InvalidInput("an amount is beyond what the ledger holds (2^63-1 minor units)", field="amount")


def new_transaction(entry: Entry, *, as_of: datetime) -> LedgerTransaction:
    """The transaction row ``entry`` would write, its key and reason checked and its request hashed."""
    check_legs(entry.currency, [])
    hashed = request_hash(entry)
    return LedgerTransaction(
        kind=entry.kind,
        currency=entry.currency,
        customer_id=entry.customer_id,
        effective_at=entry.effective_at,
        recorded_at=as_of,
        actor=entry.actor,
        reason=check_reason(entry.reason),
        trace_id=entry.trace_id,
        idempotency_key=entry.idempotency_key,
        request_hash=hashed,
        reverses_id=entry.reverses_id,
    )


async def claim(session: AsyncSession, entry: Entry, *, as_of: datetime) -> tuple[LedgerTransaction, bool]:
    """The transaction row for ``entry``: (new row, True), or (the original, False) on a retry."""
    transaction = new_transaction(entry, as_of=as_of)
    if await repository.claim_idempotency_key(session, transaction):
        return transaction, True
    original = await repository.transaction_by_key(session, entry.idempotency_key)
    if original is None:
        raise InvalidInput("this transaction has already been reversed", field="transactionId")
    if original.request_hash != transaction.request_hash:
        raise IdempotencyKeyReused()
    return original, False


async def replayed(session: AsyncSession, outcome: str, transaction_id: uuid.UUID | None) -> LedgerTransaction:
    """The original transaction a ledger function found for a retried request, or the refusal of a
    key used before for another request."""
    if outcome == "key reused" or transaction_id is None:
        raise IdempotencyKeyReused()
    original = await repository.transaction(session, transaction_id)
    assert original is not None, outcome
    return original


async def post(session: AsyncSession, transaction: LedgerTransaction, legs: list[Leg]) -> None:
    """Write balanced postings for a claimed transaction, locking the customer balances it moves."""
    if len(legs) < 2 or sum(leg.amount for leg in legs) != 0:
        raise ValueError("a transaction needs two or more postings that sum to zero")
    check_legs(transaction.currency, [leg.amount for leg in legs])
    if any(leg.account.currency != transaction.currency for leg in legs):
        raise InvalidInput(f"every amount must be in {transaction.currency}", field="currency")
    await repository.write_postings(
        session,
        transaction.id,
        [{"account_id": leg.account.id, "amount": leg.amount, "grant_id": leg.grant_id} for leg in legs if leg.amount],
    )


# System accounts never change once created, and billing needs some on every invoice: their ids
# are remembered for the life of the process, per database (a test's fresh database, or one
# dropped and made again under the same name, never sees another's ids), and only once the row
# is committed (an account created by a transaction that rolls back does not exist).
_system_accounts: dict[tuple[Any, ...], Account] = {}


async def account(
    session: AsyncSession, kind: str, currency: str, as_of: datetime, customer_id: uuid.UUID | None = None
) -> Account:
    """The account (a system account when ``customer_id`` is None), created on first use."""
    if customer_id is not None:
        found, _ = await repository.account(session, customer_id=customer_id, kind=kind, currency=currency, as_of=as_of)
        return found
    key = (await repository.database_identity(session), kind, currency)
    cached = _system_accounts.get(key)
    if cached is None:
        cached, uncommitted = await repository.account(
            session, customer_id=None, kind=kind, currency=currency, as_of=as_of
        )
        if not uncommitted:
            _system_accounts[key] = cached
    return cached


async def adjust_balance(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    currency: str,
    amount: int,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
) -> LedgerTransaction:
    """Debit (positive) or credit (negative) the customer's receivable against adjustments, in one
    round trip (claim, accounts, lock of the receivable, postings, balance)."""
    if amount == 0 or abs(amount) > MAX_AMOUNT:
        raise InvalidInput("must not be zero and at most 2^63-1 minor units", field="amount")
    entry = Entry(
        kind="adjustment",
        currency=currency,
        customer_id=customer_id,
        effective_at=as_of,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        request={"customer": str(customer_id), "currency": currency, "amount": amount, "reason": reason},
    )
    transaction = new_transaction(entry, as_of=as_of)
    outcome, transaction_id = await repository.adjust_balance(session, transaction, amount)
    if outcome == "created":
        await audit.record(
            session,
            actor=actor,
            action="balance.adjust",
            subject_type="LedgerTransaction",
            subject_id=transaction.id,
            customer_id=customer_id,
            as_of=as_of,
            after={"amount": to_major(amount, currency), "currency": currency, "reason": transaction.reason},
        )
        return transaction
    return await replayed(session, outcome, transaction_id)


async def post_entry(
    session: AsyncSession, entry: Entry, legs: list[tuple[uuid.UUID | None, str, int]], *, as_of: datetime
) -> uuid.UUID:
    """Claim ``entry`` and post its legs (owner, or None for a system account; account kind;
    amount; legs of zero are left out) in one round trip, accounts created on first use. A retry
    with the same key and request returns the original transaction's id."""
    legs = [leg for leg in legs if leg[2]]
    if len(legs) < 2 or sum(amount for _, _, amount in legs) != 0:
        raise ValueError("a transaction needs two or more postings that sum to zero")
    check_legs(entry.currency, [amount for _, _, amount in legs])
    transaction = new_transaction(entry, as_of=as_of)
    outcome, transaction_id = await repository.post_entry(session, transaction, legs)
    if outcome == "created":
        return transaction.id
    return (await replayed(session, outcome, transaction_id)).id


@dataclass(frozen=True)
class Balances:
    credits: int  # what the customer holds in credit (the credits account's credit balance)
    outstanding: int  # what the customer owes (the receivable's debit balance)


async def balances(session: AsyncSession, customer_id: uuid.UUID, currency: str) -> Balances:
    found = await repository.customer_balances(session, customer_id)
    return Balances(credits=-found.get(("credits", currency), 0), outstanding=found.get(("receivable", currency), 0))


async def entries(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    return await repository.entries_page(session, customer_id, after=after, limit=limit)


async def entries_by_ids(session: AsyncSession, ids: list[uuid.UUID]) -> list[Any]:
    return await repository.entries_by_ids(session, ids)


async def reverse_transaction(
    session: AsyncSession,
    *,
    transaction_id: uuid.UUID,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
) -> LedgerTransaction:
    """Undo a transaction with its mirror image, never by editing it. A transaction is reversed
    at most once (a unique reference); a grant's remaining credit moves back with it, and a
    reversal that would take a grant below zero (its credit already spent) is refused."""
    original = await repository.transaction(session, transaction_id)
    if original is None:
        raise NotFound("no such ledger transaction", field="transactionId")
    if original.reverses_id is not None:
        raise InvalidInput("a reversal cannot itself be reversed; post a new transaction", field="transactionId")
    entry = Entry(
        kind="reversal",
        currency=original.currency,
        customer_id=original.customer_id,
        effective_at=as_of,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        reverses_id=original.id,
        request={"transaction": str(original.id)},
    )
    existing = await repository.reversal_of(session, original.id)
    if existing is not None:
        if existing.idempotency_key == idempotency_key:
            return existing
        raise InvalidInput("this transaction has already been reversed", field="transactionId")
    postings = await repository.postings_of(session, original.id)
    grant_changes: dict[uuid.UUID, int] = {}
    for posting in postings:
        if posting.grant_id is not None:
            grant_changes[posting.grant_id] = grant_changes.get(posting.grant_id, 0) + posting.amount
    grants_touched = {}
    for grant_id in sorted(grant_changes):
        grant = await repository.grant(session, grant_id, lock=True)
        assert grant is not None
        if grant.status != "active":
            raise InvalidInput(
                f"the credit grant this transaction moved is {grant.status}; grant new credit instead",
                field="transactionId",
            )
        restored = grant.remaining + grant_changes[grant_id]
        if not 0 <= restored <= grant.amount:
            raise InvalidInput("the credit this transaction granted has already been used", field="transactionId")
        grants_touched[grant_id] = (grant, restored)
    transaction, created = await claim(session, entry, as_of=as_of)
    if not created:
        return transaction
    accounts = {a.id: a for a in await repository.accounts_by_id(session, [p.account_id for p in postings])}
    await post(session, transaction, [Leg(accounts[p.account_id], -p.amount, p.grant_id) for p in postings])
    for grant, restored in grants_touched.values():
        grant.remaining = restored
        if original.kind == "credit_grant" and restored == 0:
            grant.status = "voided"
        session.add(grant)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="ledger.reverse",
        subject_type="LedgerTransaction",
        subject_id=original.id,
        customer_id=original.customer_id,
        as_of=as_of,
        before={"kind": original.kind, "reason": original.reason, "reversed": False},
        after={"reversed": True, "reversal": str(transaction.id), "why": transaction.reason},
    )
    return transaction
