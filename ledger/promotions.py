"""Promotions: codes that grant credit, each redeemed at most once per customer and never more
than ``max_redemptions`` times in all, whatever the concurrency."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger import audit, promotions_repository, repository
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import (
    AlreadyRedeemed,
    InvalidFields,
    InvalidInput,
    NotFound,
    PromotionUnavailable,
    Taken,
    TallyError,
)
from ledger.models import CreditGrant, Promotion, PromotionRedemption
from ledger.money import to_major

#: A field of :class:`PromotionChanges` that an edit leaves as it is.
KEEP = object()

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


async def create_promotion(
    session: AsyncSession,
    *,
    code: str,
    description: str,
    credit_amount: int,
    currency: str,
    actor: str,
    as_of: datetime,
    credit_expires_in_days: int | None = None,
    max_redemptions: int | None = None,
    expires_at: datetime | None = None,
) -> Promotion:
    code = code.strip()
    if not CODE_PATTERN.match(code):
        raise InvalidInput("3 to 64 letters, digits, '-' or '_'", field="code")
    if not description.strip():
        raise InvalidInput("must not be empty", field="description")
    ledger.check_amount(credit_amount, field="creditAmount")
    if credit_expires_in_days is not None and not 1 <= credit_expires_in_days <= 3650:
        raise InvalidInput("must be between 1 and 3650", field="creditExpiresInDays")
    if max_redemptions is not None and max_redemptions < 1:
        raise InvalidInput("must be at least 1", field="maxRedemptions")
    if expires_at is not None and expires_at <= as_of:
        raise InvalidInput("must be in the future", field="expiresAt")
    promotion = Promotion(
        code=code,
        code_key=code.lower(),
        description=description.strip(),
        credit_amount=credit_amount,
        currency=currency,
        credit_expires_in_days=credit_expires_in_days,
        max_redemptions=max_redemptions,
        expires_at=expires_at,
        actor=actor,
        created_at=as_of,
    )
    if not await promotions_repository.insert_promotion(session, promotion):
        raise Taken(f"a promotion {code!r} already exists (codes ignore case)", field="code")
    await audit.record(
        session,
        actor=actor,
        action="promotion.create",
        subject_type="Promotion",
        subject_id=promotion.code,
        as_of=as_of,
        after=promotion_state(promotion),
    )
    return promotion


def promotion_state(promotion: Promotion) -> dict[str, object]:
    """What the audit log keeps of a promotion."""
    return {
        "code": promotion.code,
        "description": promotion.description,
        "credit": to_major(promotion.credit_amount, promotion.currency),
        "currency": promotion.currency,
        "credit_expires_in_days": promotion.credit_expires_in_days,
        "max_redemptions": promotion.max_redemptions,
        "expires_at": promotion.expires_at,
        "active": promotion.active,
    }


@dataclass(frozen=True)
class PromotionChanges:
    """What an edit may change; a field left as :data:`KEEP` stays as it is. The code and the
    credit stay: redemptions and the grants they made name them."""

    description: str | object = KEEP
    credit_expires_in_days: int | object | None = KEEP
    max_redemptions: int | object | None = KEEP
    expires_at: datetime | object | None = KEEP
    active: bool | object = KEEP


async def update_promotion(
    session: AsyncSession, *, promotion_id: uuid.UUID, changes: PromotionChanges, actor: str, as_of: datetime
) -> Promotion:
    """Edit a promotion, or deactivate it (``active=False``: no new redemption; the credit already
    granted stays), under its row lock, so a concurrent redemption counts against the new terms.
    Every field is checked at once; a change that changes nothing records nothing."""
    promotion = await promotions_repository.lock_promotion(session, promotion_id)
    if promotion is None:
        raise NotFound("no such promotion", field="promotionId")
    before = promotion_state(promotion)
    problems: list[TallyError] = []
    if changes.description is not KEEP:
        if not isinstance(changes.description, str) or not changes.description.strip():
            problems.append(InvalidInput("must not be empty", field="description"))
        else:
            promotion.description = changes.description.strip()
    if changes.credit_expires_in_days is not KEEP:
        days = changes.credit_expires_in_days
        if days is not None and not (isinstance(days, int) and 1 <= days <= 3650):
            problems.append(InvalidInput("must be between 1 and 3650", field="creditExpiresInDays"))
        else:
            promotion.credit_expires_in_days = days
    if changes.max_redemptions is not KEEP:
        most = changes.max_redemptions
        if most is not None and not (isinstance(most, int) and most >= max(1, promotion.redemptions)):
            problems.append(
                InvalidInput(
                    f"must be at least {max(1, promotion.redemptions)} (it was redeemed {promotion.redemptions} times)",
                    field="maxRedemptions",
                )
            )
        else:
            promotion.max_redemptions = most
    if changes.expires_at is not KEEP:
        until = changes.expires_at
        if until is not None and not (isinstance(until, datetime) and until > as_of):
            problems.append(InvalidInput("must be in the future", field="expiresAt"))
        else:
            promotion.expires_at = until
    if changes.active is not KEEP:
        promotion.active = bool(changes.active)
    if problems:
        raise InvalidFields(problems)
    after = promotion_state(promotion)
    session.add(promotion)
    await session.flush()
    if after != before:
        changed = [name for name in after if after[name] != before[name]]
        await audit.record(
            session,
            actor=actor,
            action="promotion.deactivate" if changed == ["active"] and not promotion.active else "promotion.update",
            subject_type="Promotion",
            subject_id=promotion.code,
            as_of=as_of,
            before={name: before[name] for name in changed},
            after={name: after[name] for name in changed},
        )
    return promotion


async def promotion_by_code(session: AsyncSession, code: str) -> Promotion | None:
    return await promotions_repository.promotion_by_code_key(session, code.strip().lower())


async def promotions(session: AsyncSession) -> list[Promotion]:
    return await promotions_repository.promotions_newest_first(session)


async def redeem(
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
    """Redeem a code for a customer: once per customer (a retry with the same key returns the
    same grant), and only while the promotion is active, unexpired and not exhausted; a caller
    with a ``max_amount`` redeems only promotions that credit at most that."""
    promotion = await promotion_by_code(session, code)
    if promotion is None:
        raise NotFound(f"no promotion {code!r}", field="code")
    credit.check_grant_limit(promotion.credit_amount, promotion.currency, max_amount, field="code")
    if promotion.currency != currency:
        raise InvalidInput(
            f"this promotion credits {promotion.currency}, the customer pays in {currency}", field="code"
        )
    claimed = await promotions_repository.claim_redemption(
        session, promotion_id=promotion.id, customer_id=customer_id, idempotency_key=idempotency_key, as_of=as_of
    )
    if not claimed:
        earlier = await promotions_repository.redemption(session, promotion.id, customer_id)
        if earlier is None or earlier.idempotency_key != idempotency_key or earlier.grant_id is None:
            raise AlreadyRedeemed("this customer has already redeemed this code", field="code")
        grant = await repository.grant(session, earlier.grant_id)
        assert grant is not None
        return grant
    if not await promotions_repository.count_redemption(session, promotion.id, as_of=as_of):
        raise PromotionUnavailable("this code is inactive, expired or fully redeemed", field="code")
    expires = as_of + timedelta(days=promotion.credit_expires_in_days) if promotion.credit_expires_in_days else None
    grant = await credit.grant_credits(
        session,
        customer_id=customer_id,
        currency=currency,
        amount=promotion.credit_amount,
        reason=f"promotion {promotion.code}",
        actor=actor,
        idempotency_key=idempotency_key,
        as_of=as_of,
        expires_at=expires,
        source="promotion",
    )
    await promotions_repository.set_redemption_grant(
        session, promotion_id=promotion.id, customer_id=customer_id, grant_id=grant.id
    )
    return grant


async def redemptions_of(session: AsyncSession, promotion_ids: list[uuid.UUID]) -> list[PromotionRedemption]:
    return await promotions_repository.granted_redemptions(session, promotion_ids)
