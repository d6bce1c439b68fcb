"""A state machine over grant, consume, expire, void, adjust and redeem, checked against a plain
model after every step: the same refusals, the same remaining credit, every ledger invariant."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import text

from app.database import create_engine, session_factory
from ledger import grants as credit
from ledger import promotions
from ledger import service as ledger
from ledger.errors import TallyError
from ledger.verify import verify

START = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class ModelGrant:
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    created: int  # creation order, for the "oldest first" tie-break
    status: str = "active"


def machine_for(database_url: str) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        grants = Bundle("grants")
        consumptions = Bundle("consumptions")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.engine = create_engine(database_url)
            self.sessions = session_factory(self.engine)
            self.customer = uuid.uuid4()
            self.clock = START
            self.model: dict[uuid.UUID, ModelGrant] = {}
            self.receivable = 0
            self.keys = 0
            self.code = f"P{self.customer.hex[:10]}"
            self.redeemed = False
            self.reversed: set[uuid.UUID] = set()
            self.call(
                lambda s: promotions.create_promotion(
                    s,
                    code=self.code,
                    description="machine",
                    credit_amount=500,
                    currency="USD",
                    actor="m",
                    as_of=START,
                    credit_expires_in_days=2,
                    max_redemptions=5,
                )
            )

        def call(self, action: Any) -> Any:
            async def run() -> Any:
                async with self.sessions() as session:
                    try:
                        result = await action(session)
                        await session.commit()
                        return result
                    except BaseException:
                        await session.rollback()
                        raise

            return self.loop.run_until_complete(run())

        def key(self) -> str:
            self.keys += 1
            return f"{self.customer}-{self.keys}"

        def transactions(self) -> int:
            return self.call(
                lambda s: _scalar(s, "SELECT count(*) FROM ledger_transactions WHERE customer_id = :c", c=self.customer)
            )

        def refused(self, action: Any) -> None:
            before = self.transactions()
            with pytest.raises(TallyError):
                self.call(action)
            assert self.transactions() == before, "a refused operation changes nothing"

        @rule(
            target=grants,
            amount=st.integers(-100, 5000),
            priority=st.integers(0, 3),
            expires_in=st.none() | st.integers(1, 72),
        )
        def grant(self, amount: int, priority: int, expires_in: int | None) -> uuid.UUID | None:
            expires = self.clock + timedelta(hours=expires_in) if expires_in else None
            action = lambda s: credit.grant_credits(  # noqa: E731
                s,
                customer_id=self.customer,
                currency="USD",
                amount=amount,
                reason="m",
                actor="m",
                idempotency_key=self.key(),
                as_of=self.clock,
                priority=priority,
                expires_at=expires,
            )
            if amount <= 0:
                self.refused(action)
                return None
            found = self.call(action)
            self.model[found.id] = ModelGrant(amount, amount, priority, expires, len(self.model))
            return found.id

        @rule(target=consumptions, amount=st.integers(1, 1500))
        def consume(self, amount: int) -> tuple[uuid.UUID | None, dict[uuid.UUID, int]]:
            usable = [
                (grant_id, g)
                for grant_id, g in self.model.items()
                if g.status == "active" and g.remaining and (g.expires_at is None or g.expires_at > self.clock)
            ]
            usable.sort(
                key=lambda pair: (
                    pair[1].priority,
                    pair[1].expires_at is None,
                    pair[1].expires_at or START,
                    pair[1].created,
                )
            )
            left = amount
            taken: dict[uuid.UUID, int] = {}
            for grant_id, g in usable:
                take = min(left, g.remaining)
                if take:
                    g.remaining -= take
                    taken[grant_id] = take
                    left -= take
            self.receivable -= amount - left
            result = self.call(
                lambda s: credit.consume_credits(
                    s,
                    customer_id=self.customer,
                    currency="USD",
                    amount=amount,
                    reason="m",
                    actor="m",
                    idempotency_key=self.key(),
                    as_of=self.clock,
                )
            )
            assert (result.consumed, result.uncovered) == (amount - left, left)
            return result.transaction_id, taken

        @rule(consumption=consumptions)
        def reverse(self, consumption: tuple[uuid.UUID | None, dict[uuid.UUID, int]]) -> None:
            transaction_id, taken = consumption
            if transaction_id is None:
                return
            action = lambda s: ledger.reverse_transaction(  # noqa: E731
                s, transaction_id=transaction_id, reason="m", actor="m", idempotency_key=self.key(), as_of=self.clock
            )
            reversible = transaction_id not in self.reversed and all(
                self.model[grant_id].status == "active" for grant_id in taken
            )
            if not reversible:
                self.refused(action)
                return
            self.call(action)
            self.reversed.add(transaction_id)
            for grant_id, take in taken.items():
                self.model[grant_id].remaining += take
            self.receivable += sum(taken.values())

        @rule(hours=st.integers(1, 48))
        def advance(self, hours: int) -> None:
            self.clock += timedelta(hours=hours)

        @rule()
        def expire(self) -> None:
            self.call(lambda s: credit.expire_grants(s, as_of=self.clock))
            for g in self.model.values():
                if g.status == "active" and g.expires_at is not None and g.expires_at <= self.clock:
                    g.status, g.remaining = "expired", 0

        @rule(grant_id=grants)
        def void(self, grant_id: uuid.UUID | None) -> None:
            if grant_id is None:
                return
            action = lambda s: credit.void_grant(  # noqa: E731
                s, grant_id=grant_id, reason="m", actor="m", idempotency_key=self.key(), as_of=self.clock
            )
            modelled = self.model[grant_id]
            if modelled.status != "active":
                self.refused(action)
                return
            self.call(action)
            modelled.status, modelled.remaining = "voided", 0

        @rule(amount=st.integers(-3000, 3000))
        def adjust(self, amount: int) -> None:
            action = lambda s: ledger.adjust_balance(  # noqa: E731
                s,
                customer_id=self.customer,
                currency="USD",
                amount=amount,
                reason="m",
                actor="m",
                idempotency_key=self.key(),
                as_of=self.clock,
            )
            if amount == 0:
                self.refused(action)
                return
            self.call(action)
            self.receivable += amount

        @rule()
        def redeem(self) -> None:
            action = lambda s: promotions.redeem(  # noqa: E731
                s,
                code=self.code,
                customer_id=self.customer,
                currency="USD",
                actor="m",
                idempotency_key=self.key(),
                as_of=self.clock,
            )
            if self.redeemed:
                self.refused(action)
                return
            found = self.call(action)
            self.redeemed = True
            self.model[found.id] = ModelGrant(500, 500, 100, self.clock + timedelta(days=2), len(self.model))

        @invariant()
        def balances_match_the_model(self) -> None:
            found = self.call(lambda s: ledger.balances(s, self.customer, "USD"))
            assert found.credits == sum(g.remaining for g in self.model.values())
            assert found.outstanding == self.receivable
            stored = self.call(lambda s: _remaining(s, self.customer))
            assert stored == {gid: g.remaining for gid, g in self.model.items()}

        @invariant()
        def every_ledger_invariant_holds(self) -> None:
            assert self.call(verify) == []

        def teardown(self) -> None:
            self.loop.run_until_complete(self.engine.dispose())
            self.loop.close()

    return LedgerMachine


async def _scalar(session: Any, sql: str, **params: Any) -> Any:
    return (await session.execute(text(sql), params)).scalar_one()


async def _remaining(session: Any, customer: uuid.UUID) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        text("SELECT id, remaining FROM credit_grants WHERE customer_id = :c"), {"c": customer}
    )
    return {grant_id: remaining for grant_id, remaining in rows}


def test_ledger_state_machine(database_url: str) -> None:
    machine = machine_for(database_url)
    machine.TestCase.settings = settings(
        max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
    )
    machine.TestCase().runTest()
