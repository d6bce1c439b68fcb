"""The job that checks watched customers' credit balances (:mod:`billing.credits.balance`): the
low-balance alert and auto-recharge, run each tick after the billing run and the credit expiry,
so what they consumed or expired is seen in the same tick. One committed transaction per batch."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.credits.balance import check_balance, watched_customers

BATCH = 100


async def check_credit_balances(sessions: async_sessionmaker[AsyncSession], *, as_of: datetime) -> int:
    """How many auto-recharges were bought."""
    bought, after = 0, None
    async with sessions() as session:
        while customer_ids := await watched_customers(session, after=after, limit=BATCH):
            for customer_id in customer_ids:
                check = await check_balance(session, customer_id, as_of=as_of)
                bought += 1 if check is not None and check.recharge is not None else 0
            await session.commit()
            after = customer_ids[-1]
    return bought
