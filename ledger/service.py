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

from ledger import repository
from ledger.errors import IdempotencyKeyReused, InvalidInput, NotFound
from ledger.models import Account, CreditGrant, LedgerTransaction

MAX_AMOUNT = 2**63 - 1
# Who funds a grant, and where what remains of a voided one goes back to.
GRANT_COUNTERPARTY = {"manual": "adjustments", "promotion": "promotions", "purchase": "receivable"}
VOID_TARGET = {"manual": "adjustments", "promotion": "promotions", "purchase": "adjustments"}


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


async def claim(session: AsyncSession, entry: Entry, *, as_of: datetime) -> tuple[LedgerTransaction, bool]:
    """The transaction row for ``entry``: (new row, True), or (the original, False) on a retry."""
    if not entry.idempotency_key or not entry.idempotency_key.strip():
        raise InvalidInput("is required", field="idempotencyKey")
    transaction = LedgerTransaction(
        kind=entry.kind,
        currency=entry.currency,
        customer_id=entry.customer_id,
        effective_at=entry.effective_at,
        recorded_at=as_of,
        actor=entry.actor,
        reason=check_reason(entry.reason),
        trace_id=entry.trace_id,
        idempotency_key=entry.idempotency_key,
        request_hash=_request_hash(entry),
        reverses_id=entry.reverses_id,
    )
    if await repository.claim_idempotency_key(session, transaction):
        return transaction, True
    original = await repository.transaction_by_key(session, entry.idempotency_key)
    if original is None:
        raise InvalidInput("this transaction has already been reversed", field="transactionId")
    if original.request_hash != transaction.request_hash:
        raise IdempotencyKeyReused()
    return original, False


async def post(session: AsyncSession, transaction: LedgerTransaction, legs: list[Leg]) -> None:
    """Write balanced postings for a claimed transaction, locking the customer balances it moves."""
    if len(legs) < 2 or sum(leg.amount for leg in legs) != 0:
        raise ValueError("a transaction needs two or more postings that sum to zero")
    if any(leg.account.currency != transaction.currency for leg in legs):
        raise InvalidInput(f"every amount must be in {transaction.currency}", field="currency")
    await repository.lock_customer_accounts(session, [leg.account.id for leg in legs])
    await repository.write_postings(
        session,
        transaction.id,
        [{"account_id": leg.account.id, "amount": leg.amount, "grant_id": leg.grant_id} for leg in legs if leg.amount],
    )


async def account(
    session: AsyncSession, kind: str, currency: str, as_of: datetime, customer_id: uuid.UUID | None = None
) -> Account:
    return await repository.account(session, customer_id=customer_id, kind=kind, currency=currency, as_of=as_of)


async def grant_credits(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    currency: str,
    amount: int,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    priority: int = 100,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    source: str = "manual",
    trace_id: str | None = None,
) -> CreditGrant:
    """Credit the customer: a liability to them, funded by the source's account."""
    check_amount(amount)
    if expires_at is not None and expires_at <= as_of:
        raise InvalidInput("must be in the future", field="expiresAt")
    if not 0 <= priority <= 1_000_000:
        raise InvalidInput("must be between 0 and 1000000", field="priority")
    starts = effective_at or as_of
    entry = Entry(
        kind="credit_grant",
        currency=currency,
        customer_id=customer_id,
        effective_at=starts,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        trace_id=trace_id,
        request={
            "customer": str(customer_id),
            "currency": currency,
            "amount": amount,
            "priority": priority,
            "expires_at": expires_at,
            "source": source,
            "reason": reason,
        },
    )
    transaction, created = await claim(session, entry, as_of=as_of)
    if not created:
        return await repository.grant_of_transaction(session, transaction.id)
    credits = await account(session, "credits", currency, as_of, customer_id)
    counterparty_kind = GRANT_COUNTERPARTY[source]
    funded_by = await account(
        session, counterparty_kind, currency, as_of, customer_id if counterparty_kind == "receivable" else None
    )
    grant = CreditGrant(
        customer_id=customer_id,
        currency=currency,
        amount=amount,
        remaining=amount,
        priority=priority,
        effective_at=starts,
        expires_at=expires_at,
        source=source,
        reason=transaction.reason,
        actor=actor,
        status="active",
        transaction_id=transaction.id,
        created_at=as_of,
    )
    session.add(grant)
    await session.flush()
    await post(session, transaction, [Leg(funded_by, amount), Leg(credits, -amount, grant.id)])
    return grant


def consumption_order(grant: CreditGrant) -> tuple[Any, ...]:
    """Lower priority first, then earliest expiry (never-expiring last), then oldest."""
    return (
        grant.priority,
        grant.expires_at is None,
        grant.expires_at or grant.effective_at,
        grant.effective_at,
        grant.sequence,  # creation order; a random id would make ties a coin flip
    )


@dataclass(frozen=True)
class Consumption:
    transaction_id: uuid.UUID | None
    consumed: int
    uncovered: int


async def consume_credits(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    currency: str,
    amount: int,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    trace_id: str | None = None,
) -> Consumption:
    """Draw ``amount`` from the customer's grants in consumption order against their receivable;
    return what was consumed and what the grants could not cover."""
    check_amount(amount)
    grants = await repository.grants_for_update(session, customer_id, currency, as_of)
    entry = Entry(
        kind="credit_consumption",
        currency=currency,
        customer_id=customer_id,
        effective_at=as_of,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        trace_id=trace_id,
        request={"customer": str(customer_id), "currency": currency, "amount": amount},
    )
    drawn: list[tuple[CreditGrant, int]] = []
    left = amount
    for grant in sorted(grants, key=consumption_order):
        take = min(left, grant.remaining)
        if take:
            drawn.append((grant, take))
            left -= take
    consumed = amount - left
    if not consumed:
        return Consumption(None, 0, amount)
    transaction, created = await claim(session, entry, as_of=as_of)
    if not created:
        return Consumption(transaction.id, consumed, left)
    credits = await account(session, "credits", currency, as_of, customer_id)
    receivable = await account(session, "receivable", currency, as_of, customer_id)
    legs = [Leg(credits, take, grant.id) for grant, take in drawn] + [Leg(receivable, -consumed)]
    await post(session, transaction, legs)
    for grant, take in drawn:
        grant.remaining -= take
        session.add(grant)
    await session.flush()
    return Consumption(transaction.id, consumed, left)


async def _release_grant(
    session: AsyncSession,
    grant: CreditGrant,
    *,
    kind: str,
    to_account_kind: str,
    status: str,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
) -> CreditGrant:
    """Post what remains of a grant away (breakage at expiry, back to its source when voided)."""
    remaining = grant.remaining
    entry = Entry(
        kind=kind,
        currency=grant.currency,
        customer_id=grant.customer_id,
        effective_at=as_of,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        request={"grant": str(grant.id)},
    )
    if remaining:
        transaction, created = await claim(session, entry, as_of=as_of)
        if created:
            credits = await account(session, "credits", grant.currency, as_of, grant.customer_id)
            target = await account(session, to_account_kind, grant.currency, as_of)
            await post(session, transaction, [Leg(credits, remaining, grant.id), Leg(target, -remaining)])
    grant.remaining = 0
    grant.status = status
    session.add(grant)
    await session.flush()
    return grant


async def expire_grants(session: AsyncSession, *, as_of: datetime) -> int:
    """Post what remains of every grant past its expiry to breakage; safe to run again."""
    expired = await repository.expiring_grants(session, as_of)
    for grant in expired:
        await _release_grant(
            session,
            grant,
            kind="credit_expiry",
            to_account_kind="breakage",
            status="expired",
            reason="credit grant expired",
            actor="job:expire-grants",
            idempotency_key=f"expire:{grant.id}",
            as_of=as_of,
        )
    return len(expired)


async def void_grant(
    session: AsyncSession, *, grant_id: uuid.UUID, reason: str, actor: str, idempotency_key: str, as_of: datetime
) -> CreditGrant:
    """Void what remains of a grant (what was consumed stays consumed)."""
    grant = await repository.grant(session, grant_id, lock=True)
    if grant is None:
        raise NotFound("no such credit grant", field="grantId")
    if grant.status != "active":
        raise InvalidInput(f"the grant is already {grant.status}", field="grantId")
    return await _release_grant(
        session,
        grant,
        kind="credit_void",
        to_account_kind=VOID_TARGET[grant.source],
        status="voided",
        reason=reason,
        actor=actor,
        idempotency_key=idempotency_key,
        as_of=as_of,
    )


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
    """Debit (positive) or credit (negative) the customer's receivable against adjustments."""
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
    transaction, created = await claim(session, entry, as_of=as_of)
    if created:
        receivable = await account(session, "receivable", currency, as_of, customer_id)
        adjustments = await account(session, "adjustments", currency, as_of)
        await post(session, transaction, [Leg(receivable, amount), Leg(adjustments, -amount)])
    return transaction


@dataclass(frozen=True)
class Balances:
    credits: int  # what the customer holds in credit (the credits account's credit balance)
    outstanding: int  # what the customer owes (the receivable's debit balance)


async def balances(session: AsyncSession, customer_id: uuid.UUID, currency: str) -> Balances:
    found = await repository.customer_balances(session, customer_id)
    return Balances(credits=-found.get(("credits", currency), 0), outstanding=found.get(("receivable", currency), 0))


async def grants(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[CreditGrant]:
    return await repository.grants_page(session, customer_id, after=after, limit=limit)


async def entries(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    return await repository.entries_page(session, customer_id, after=after, limit=limit)


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
    return transaction
