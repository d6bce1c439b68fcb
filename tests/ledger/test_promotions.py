"""Promotions: case-insensitive codes, once per customer, maxRedemptions under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from app.database import create_engine, session_factory
from ledger import promotions
from ledger.errors import TallyError
from tests.app.test_graphql_contract import run_contract_operation as run

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def test_create_and_redeem_through_graphql(client: httpx.AsyncClient, token_for) -> None:
    support = await token_for("support")
    created = (
        await run(
            client,
            support,
            "CreatePromotion",
            {
                "input": {
                    "code": "Welcome-10",
                    "description": "Welcome credit",
                    "creditAmount": "10.00",
                    "currency": "usd",
                    "creditExpiresInDays": 30,
                    "maxRedemptions": 100,
                }
            },
        )
    )["createPromotion"]
    assert created["userErrors"] == [] and created["promotion"]["redemptions"] == 0
    taken = (
        await run(
            client,
            support,
            "CreatePromotion",
            {"input": {"code": "WELCOME-10", "description": "x", "creditAmount": "1", "currency": "USD"}},
        )
    )["createPromotion"]
    assert [e["code"] for e in taken["userErrors"]] == ["TAKEN"]
    customer = (
        await run(
            client,
            support,
            "CreateCustomer",
            {"input": {"externalId": "org_promo", "name": "Promo", "currency": "USD"}},
        )
    )["createCustomer"]["customer"]["id"]
    redeemed = (
        await run(
            client,
            support,
            "RedeemPromotion",
            {"input": {"customerId": customer, "code": "welcome-10", "idempotencyKey": "r-1"}},
        )
    )["redeemPromotion"]
    assert redeemed["userErrors"] == [] and redeemed["grant"]["amount"]["amount"] == "10.00"
    assert redeemed["grant"]["expiresAt"] is not None
    retried = (
        await run(
            client,
            support,
            "RedeemPromotion",
            {"input": {"customerId": customer, "code": "WELCOME-10", "idempotencyKey": "r-1"}},
        )
    )["redeemPromotion"]
    assert retried["grant"]["id"] == redeemed["grant"]["id"]
    twice = (
        await run(
            client,
            support,
            "RedeemPromotion",
            {"input": {"customerId": customer, "code": "welcome-10", "idempotencyKey": "r-2"}},
        )
    )["redeemPromotion"]
    assert [e["code"] for e in twice["userErrors"]] == ["ALREADY_REDEEMED"]
    big = (
        await run(
            client,
            support,
            "CreatePromotion",
            {"input": {"code": "BIG", "description": "Big", "creditAmount": "500", "currency": "USD"}},
        )
    )["createPromotion"]
    assert big["userErrors"] == []
    limited = (
        await run(
            client,
            support,
            "RedeemPromotion",
            {"input": {"customerId": customer, "code": "BIG", "idempotencyKey": "r-3"}},
        )
    )["redeemPromotion"]
    assert [e["code"] for e in limited["userErrors"]] == ["LIMIT_EXCEEDED"]


async def test_fifty_concurrent_redemptions_of_a_ten_use_code(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await promotions.create_promotion(
            session,
            code="TEN",
            description="Ten only",
            credit_amount=500,
            currency="USD",
            actor="test",
            as_of=NOW,
            max_redemptions=10,
        )
        await session.commit()

    async def redeem(index: int) -> bool:
        async with sessions() as session:
            try:
                await promotions.redeem(
                    session,
                    code="ten",
                    customer_id=uuid.uuid4(),
                    currency="USD",
                    actor="test",
                    idempotency_key=f"k-{index}",
                    as_of=NOW,
                )
                await session.commit()
                return True
            except TallyError as error:
                await session.rollback()
                assert error.code == "PROMOTION_UNAVAILABLE"
                return False

    outcomes = await asyncio.gather(*(redeem(i) for i in range(50)))
    async with sessions() as session:
        redemptions = (await session.execute(text("SELECT redemptions FROM promotions"))).scalar_one()
        grants = (await session.execute(text("SELECT count(*) FROM credit_grants"))).scalar_one()
    await engine.dispose()
    assert sum(outcomes) == 10 == redemptions == grants


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"code": "x"}, "code"),
        ({"credit_amount": 0}, "creditAmount"),
        ({"max_redemptions": 0}, "maxRedemptions"),
        ({"expires_at": NOW - timedelta(days=1)}, "expiresAt"),
        ({"description": " "}, "description"),
    ],
)
async def test_bad_promotions_are_refused(database_url: str, options: dict, field: str) -> None:
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        arguments = {
            "code": "GOOD",
            "description": "d",
            "credit_amount": 100,
            "currency": "USD",
            "actor": "t",
            "as_of": NOW,
            **options,
        }
        with pytest.raises(TallyError) as raised:
            await promotions.create_promotion(session, **arguments)
    await engine.dispose()
    assert raised.value.field == field
