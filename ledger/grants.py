"""Credit grants: granted, consumed in order, expired to breakage, voided.

Consumption order: lower priority first, then the earliest expiry (never-expiring last), then
the oldest grant. Grants are locked in id order before any is drawn.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger import audit, repository
from ledger.errors import IdempotencyKeyReused, InvalidInput, LimitExceeded, NotFound
from ledger.models import CreditGrant
from ledger.money import to_major
from ledger.service import (
    Entry,
    Leg,
    account,
    check_amount,
    check_reason,
    claim,
    new_transaction,
    post,
    replayed,
    request_hash,
)

# Who funds a grant, and where what remains of a voided one goes back to.
# An "invoice" grant is the credit of an invoice whose total is negative (a downgrade's proration):
# the invoice debited the receivable below zero, the grant moves that to the customer's credits.
# A "commitment" grant is a prepaid commitment's credit: its invoice is the receivable it debits.
# A "credit_note" grant is a credit note settled to the credit balance: the note credited the
# receivable (revenue taken back), the grant moves that to the customer's credits.
GRANT_COUNTERPARTY = {
    "manual": "adjustments",
    "promotion": "promotions",
    "purchase": "receivable",
    "invoice": "receivable",
    "commitment": "receivable",
    "credit_note": "receivable",
}
VOID_TARGET = {
    "manual": "adjustments",
    "promotion": "promotions",
    "purchase": "adjustments",
    "invoice": "adjustments",
    "commitment": "adjustments",
    "credit_note": "adjustments",
}


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
    max_amount: int | None = None,
) -> CreditGrant:
    """Credit the customer: a liability to them, funded by the source's account. ``max_amount``
    is the most the caller may grant at once (a role's limit; see :func:`check_grant_limit`)."""
    check_amount(amount)
    check_grant_limit(amount, currency, max_amount, field="amount")
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
    transaction = new_transaction(entry, as_of=as_of)
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
    outcome, transaction_id, grant.sequence = await repository.grant_credits(
        session, transaction, grant, GRANT_COUNTERPARTY[source]
    )
    if outcome == "created":
        await audit.record(
            session,
            actor=actor,
            action="credits.grant",
            subject_type="CreditGrant",
            subject_id=grant.id,
            customer_id=customer_id,
            as_of=as_of,
            after=grant_state(grant),
        )
        return grant
    original = await replayed(session, outcome, transaction_id)
    return await repository.grant_of_transaction(session, original.id)


def grant_state(grant: CreditGrant) -> dict[str, object]:
    """What the audit log keeps of a grant: its amounts in major units, its terms, its status."""
    return {
        "amount": to_major(grant.amount, grant.currency),
        "remaining": to_major(grant.remaining, grant.currency),
        "currency": grant.currency,
        "priority": grant.priority,
        "expires_at": grant.expires_at,
        "source": grant.source,
        "reason": grant.reason,
        "status": grant.status,
    }


def check_grant_limit(amount: int, currency: str, max_amount: int | None, *, field: str) -> None:
    """Refuse a grant larger than the caller may make at once (None: no limit). One rule for
    every way of granting (a grant, a promotion's redemption) and every caller (GraphQL, the
    console through it, the CLI), checked before anything is written."""
    if max_amount is not None and amount > max_amount:
        raise LimitExceeded(
            f"your role may grant at most {to_major(max_amount, currency)} {currency} at once; ask finance",
            field=field,
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
    return what was consumed and what the grants could not cover (a retry returns what the first
    call drew). One round trip: the ``ledger_consume_credits`` function locks the drawable grants
    in id order, then the customer's two accounts, and draws from what remains after the locks."""
    check_amount(amount)
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
    outcome, transaction_id, consumed = await repository.consume_credits(
        session,
        transaction_id=uuid.uuid4(),
        customer_id=customer_id,
        currency=currency,
        amount=amount,
        reason=check_reason(reason),
        actor=actor,
        idempotency_key=idempotency_key,
        request_hash=request_hash(entry),
        trace_id=trace_id,
        as_of=as_of,
    )
    if outcome == "key reused":
        raise IdempotencyKeyReused()
    return Consumption(transaction_id, consumed, amount - consumed)


async def drawable_credits(session: AsyncSession, *, customer_id: uuid.UUID, currency: str, as_of: datetime) -> int:
    """What ``consume_credits`` could draw at ``as_of``, read without locking (for previews)."""
    grants = await repository.drawable_grants(session, customer_id, currency, as_of)
    return sum(grant.remaining for grant in grants)


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
    return len(await expire_due_grants(session, as_of=as_of))


async def expire_due_grants(session: AsyncSession, *, as_of: datetime) -> list[tuple[CreditGrant, int]]:
    """:func:`expire_grants`, answering each grant expired now with what remained of it (for the
    layer above, which tells the product)."""
    expired = await repository.expiring_grants(session, as_of)
    remained = [grant.remaining for grant in expired]
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
    return list(zip(expired, remained, strict=True))


@dataclass(frozen=True)
class VoidedGrant:
    grant: CreditGrant
    voided: int  # what remained of it, posted back to where it came from


async def void_grant(
    session: AsyncSession, *, grant_id: uuid.UUID, reason: str, actor: str, idempotency_key: str, as_of: datetime
) -> CreditGrant:
    """Void what remains of a grant (what was consumed stays consumed)."""
    voided = await void_remaining(
        session, grant_id=grant_id, reason=reason, actor=actor, idempotency_key=idempotency_key, as_of=as_of
    )
    return voided.grant


async def void_remaining(
    session: AsyncSession,
    *,
    grant_id: uuid.UUID,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    customer_id: uuid.UUID | None = None,
) -> VoidedGrant:
    """:func:`void_grant`, answering what remained (read under the grant's lock, so no
    consumption slips between the read and the void); with ``customer_id``, only a grant of that
    customer (any other is "no such grant"). A retry with the void's key answers the first void
    and changes nothing (a double submit of the console's confirmation)."""
    check_reason(reason)
    grant = await repository.grant(session, grant_id, lock=True)
    if grant is None or (customer_id is not None and grant.customer_id != customer_id):
        raise NotFound("no such credit grant", field="grantId")
    if grant.status == "voided" and (done := await repository.transaction_by_key(session, idempotency_key)):
        postings = await repository.postings_of(session, done.id)
        if done.kind == "credit_void" and any(posting.grant_id == grant.id for posting in postings):
            return VoidedGrant(grant, sum(p.amount for p in postings if p.grant_id == grant.id))  # a retry
    if grant.status != "active":
        raise InvalidInput(f"the grant is already {grant.status}", field="grantId")
    remaining = grant.remaining
    released = await _release_grant(
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
    await audit.record(
        session,
        actor=actor,
        action="credits.void",
        subject_type="CreditGrant",
        subject_id=grant.id,
        customer_id=grant.customer_id,
        as_of=as_of,
        before={"status": "active", "remaining": to_major(remaining, grant.currency)},
        after={
            "status": released.status,
            "remaining": to_major(released.remaining, grant.currency),
            "voided": to_major(remaining, grant.currency),
            "currency": grant.currency,
            "reason": reason,
        },
    )
    return VoidedGrant(released, remaining)


async def grants(
    session: AsyncSession, customer_id: uuid.UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[CreditGrant]:
    return await repository.grants_page(session, customer_id, after=after, limit=limit)
