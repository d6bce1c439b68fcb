"""The rules money actions share whoever calls them (GraphQL, the console through it, the CLI):
the largest grant a caller may make, voids, promotion edits, and the audit log each writes in
its own transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger import grants as credit
from ledger import promotions
from ledger.errors import InvalidFields, LimitExceeded
from ledger.verify import verify

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CUSTOMER = uuid.UUID("00000000-0000-0000-0000-0000000000c7")


async def audit_rows(session: AsyncSession) -> list[tuple[str, str, dict | None, dict | None]]:
    found = await session.execute(text("SELECT action, actor, before, after FROM audit_log ORDER BY id"))
    return [tuple(row) for row in found.all()]  # type: ignore[misc]


async def grant(session: AsyncSession, amount: int, key: str, **options: object):  # type: ignore[no-untyped-def]
    return await credit.grant_credits(
        session,
        customer_id=CUSTOMER,
        currency="USD",
        amount=amount,
        reason="goodwill",
        actor="staff:ana@example.com",
        idempotency_key=key,
        as_of=NOW,
        **options,  # type: ignore[arg-type]
    )


async def test_a_grant_over_the_callers_limit_is_refused_and_writes_nothing(session: AsyncSession) -> None:
    with pytest.raises(LimitExceeded) as refused:
        await grant(session, 10_001, "g-1", max_amount=10_000)
    assert refused.value.field == "amount" and "at most 100.00 USD at once" in refused.value.message
    await session.rollback()
    assert (await session.execute(text("SELECT count(*) FROM credit_grants"))).scalar_one() == 0
    assert await audit_rows(session) == []
    made = await grant(session, 10_000, "g-2", max_amount=10_000)
    assert made.amount == 10_000, "the limit itself may be granted"


async def test_a_promotion_over_the_callers_limit_is_not_redeemed(session: AsyncSession) -> None:
    await promotions.create_promotion(
        session, code="BIG-ONE", description="Big", credit_amount=50_000, currency="USD", actor="t", as_of=NOW
    )
    with pytest.raises(LimitExceeded) as refused:
        await promotions.redeem(
            session,
            code="big-one",
            customer_id=CUSTOMER,
            currency="USD",
            actor="staff:cs@example.com",
            idempotency_key="r-1",
            as_of=NOW,
            max_amount=10_000,
        )
    assert refused.value.field == "code"


async def test_grants_and_voids_are_audited_once_with_what_they_changed(session: AsyncSession) -> None:
    first = await grant(session, 2_500, "g-1")
    again = await grant(session, 2_500, "g-1")
    assert again.id == first.id
    voided = await credit.void_remaining(
        session,
        grant_id=first.id,
        reason="granted twice",
        actor="staff:fin@example.com",
        idempotency_key="v-1",
        as_of=NOW + timedelta(hours=1),
    )
    await session.commit()
    assert voided.voided == 2_500 and voided.grant.status == "voided"
    rows = await audit_rows(session)
    assert [(action, actor) for action, actor, _, _ in rows] == [
        ("credits.grant", "staff:ana@example.com"),
        ("credits.void", "staff:fin@example.com"),
    ], "a retried grant records nothing more"
    _, _, before, after = rows[1]
    assert before == {"status": "active", "remaining": "25.00"}
    assert after == {
        "status": "voided",
        "remaining": "0.00",
        "voided": "25.00",
        "currency": "USD",
        "reason": "granted twice",
    }
    assert await verify(session) == [], "the void balanced: credits back to adjustments"


async def test_a_void_is_only_of_the_named_customers_grant(session: AsyncSession) -> None:
    made = await grant(session, 1_000, "g-1")
    with pytest.raises(Exception, match="no such credit grant"):
        await credit.void_remaining(
            session,
            grant_id=made.id,
            reason="x",
            actor="t",
            idempotency_key="v-1",
            as_of=NOW,
            customer_id=uuid.uuid4(),
        )


async def test_promotion_edits_are_checked_at_once_and_audited_as_changes(session: AsyncSession) -> None:
    made = await promotions.create_promotion(
        session, code="SPRING", description="Spring", credit_amount=1_500, currency="USD", actor="t", as_of=NOW
    )
    await session.commit()
    with pytest.raises(InvalidFields) as refused:
        await promotions.update_promotion(
            session,
            promotion_id=made.id,
            changes=promotions.PromotionChanges(description=" ", max_redemptions=0, expires_at=NOW),
            actor="staff:ana@example.com",
            as_of=NOW,
        )
    assert sorted(error.field or "" for error in refused.value.errors) == ["description", "expiresAt", "maxRedemptions"]
    await session.rollback()
    unchanged = promotions.PromotionChanges(description="Spring")
    await promotions.update_promotion(session, promotion_id=made.id, changes=unchanged, actor="a", as_of=NOW)
    edited = await promotions.update_promotion(
        session,
        promotion_id=made.id,
        changes=promotions.PromotionChanges(max_redemptions=10, active=False),
        actor="staff:ana@example.com",
        as_of=NOW,
    )
    await session.commit()
    assert (edited.max_redemptions, edited.active, edited.description) == (10, False, "Spring")
    rows = await audit_rows(session)
    assert [row[0] for row in rows] == ["promotion.create", "promotion.update"], "an edit changing nothing: no row"
    assert rows[1][2:] == ({"max_redemptions": None, "active": True}, {"max_redemptions": 10, "active": False})
