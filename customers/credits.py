"""Credit grants as the rest of Tally makes them: :mod:`ledger.grants` and :mod:`ledger.promotions`
post them (the ledger knows nothing of ours), and this layer tells the product in the same
transaction: ``credits.granted`` once per grant, ``credits.expired`` once per grant that expired
with something left. Every grant goes through here (the API, promotions, credit notes settled as
credit, invoices with a negative total, prepaid commitments, the demo), so none goes untold; a
retried grant returns the first one, whose event exists already, and tells nothing more."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from customers.webhook_payloads import grant_event
from ledger import grants, promotions
from ledger.models import CreditGrant
from notifications.webhook_events import emit


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
    """:func:`ledger.grants.grant_credits`, and ``credits.granted``."""
    grant = await grants.grant_credits(
        session,
        customer_id=customer_id,
        currency=currency,
        amount=amount,
        reason=reason,
        actor=actor,
        idempotency_key=idempotency_key,
        as_of=as_of,
        priority=priority,
        expires_at=expires_at,
        effective_at=effective_at,
        source=source,
        trace_id=trace_id,
        max_amount=max_amount,
    )
    await emit(session, grant_event("credits.granted", grant), as_of=as_of)
    return grant


async def redeem_promotion(
    session: AsyncSession,
    *,
    code: str,
    customer_id: uuid.UUID,
    currency: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    max_amount: int | None = None,
) -> CreditGrant:
    """:func:`ledger.promotions.redeem`, and ``credits.granted`` for the grant it makes."""
    grant = await promotions.redeem(
        session,
        code=code,
        customer_id=customer_id,
        currency=currency,
        actor=actor,
        idempotency_key=idempotency_key,
        as_of=as_of,
        max_amount=max_amount,
    )
    await emit(session, grant_event("credits.granted", grant), as_of=as_of)
    return grant


async def expire_grants(session: AsyncSession, *, as_of: datetime) -> int:
    """:func:`ledger.grants.expire_grants`, and ``credits.expired`` for each grant that had
    something left (one used up before its expiry loses nothing). How many grants expired."""
    expired = await grants.expire_due_grants(session, as_of=as_of)
    for grant, remained in expired:
        if remained:
            await emit(session, grant_event("credits.expired", grant), as_of=as_of)
    return len(expired)


async def void_grant(
    session: AsyncSession,
    *,
    grant_id: uuid.UUID,
    reason: str,
    actor: str,
    idempotency_key: str,
    as_of: datetime,
    customer_id: uuid.UUID | None = None,
) -> grants.VoidedGrant:
    """:func:`ledger.grants.void_remaining`: what remains of a grant goes back to its source."""
    return await grants.void_remaining(
        session,
        grant_id=grant_id,
        reason=reason,
        actor=actor,
        idempotency_key=idempotency_key,
        as_of=as_of,
        customer_id=customer_id,
    )
