"""Usage and spend alerts, fired by the roller: once per threshold and period under concurrent
ingestion, again in a new period, within the roller pass after the crossing event; spend is the
running amount with credits subtracted; the email goes out in the customer's locale; the webhook
event exists once; ``entitlement.exhausted`` once per meter and period."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window
from app.jobs import roll_up_usage
from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from billing.insights import alerts
from billing.invoices import service as billing
from customers.models import Customer
from customers.service import NewCustomer, create_customer
from ledger.grants import grant_credits
from tests.conftest import now

WINDOW = billing_window(Settings())


async def _customer(session: AsyncSession, plan: str, *, started_at: datetime, locale: str = "en") -> uuid.UUID:
    key = f"alerts-{uuid.uuid4().hex[:8]}"
    customer = await create_customer(
        session,
        NewCustomer(external_id=key, name="Acme", currency="USD", plan_key=plan, started_at=started_at),
        as_of=started_at,
    )
    await session.execute(
        text("UPDATE customers SET locale = :locale, invoice_emails = ARRAY['billing@acme.test'] WHERE id = :id"),
        {"locale": locale, "id": customer.id},
    )
    await session.commit()
    return customer.id


async def _requests(
    sessions: async_sessionmaker[AsyncSession], customer_id: uuid.UUID, count: int, at: datetime
) -> None:
    async with sessions() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        items = [
            {
                "id": f"r-{uuid.uuid4()}",
                "customer": customer.external_id,
                "type": "request.completed",
                "timestamp": at.isoformat(),
                "properties": {"model": "large-1"},
            }
            for _ in range(count)
        ]
        result = await ingest_and_commit(session, items, Settings())
    assert result.accepted == count


async def _alert(session: AsyncSession, **fields: Any) -> uuid.UUID:
    new = alerts.NewAlert(**{"name": f"alert {uuid.uuid4().hex[:6]}", "threshold_unit": "percent", **fields})
    row = await alerts.create_alert(session, new, actor="test", as_of=now())
    await session.commit()
    return row.id


async def _firings(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[str, Decimal, datetime]]:
    rows = await session.execute(
        text(
            "SELECT a.name, f.threshold, f.period_start FROM usage_alert_firings f JOIN usage_alerts a ON a.id = "
            "f.alert_id WHERE f.customer_id = :c ORDER BY f.period_start, a.name, f.threshold"
        ),
        {"c": customer_id},
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def _events(session: AsyncSession, customer_id: uuid.UUID, type_: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("SELECT data FROM webhook_events WHERE customer_id = :c AND type = :t ORDER BY created_at"),
        {"c": customer_id, "t": type_},
    )
    return [row[0] for row in rows]


async def test_each_threshold_fires_once_under_concurrent_ingestion_within_the_roller_pass(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    """Hobby limits requests to 50. Four clients ingest and roll up at once, past the limit: each
    of 50/80/100% (and the plan's absolute 10) fires once, exhaustion is told once."""
    customer_id = await _customer(session, "hobby", started_at=now() - timedelta(days=1), locale="de")
    await _alert(
        session,
        customer_id=customer_id,
        metric="usage",
        meter_key="requests",
        thresholds=(Decimal(50), Decimal(80), Decimal(100)),
    )
    await _alert(
        session,
        name="plan ten",
        plan_key="hobby",
        metric="usage",
        meter_key="requests",
        threshold_unit="absolute",
        thresholds=(Decimal(10),),
    )
    at = now() - timedelta(minutes=5)

    await _requests(sessions, customer_id, 9, at)
    await roll_up_usage(sessions)
    assert await _firings(session, customer_id) == [], "9 requests cross nothing"
    await _requests(sessions, customer_id, 2, at)
    await roll_up_usage(sessions)
    assert [f[0] for f in await _firings(session, customer_id)] == ["plan ten"], "fired by the roll-up after it"

    async def client() -> None:
        for _ in range(3):
            await _requests(sessions, customer_id, 5, at)
            await roll_up_usage(sessions)

    await asyncio.gather(*(client() for _ in range(4)))  # 11 + 60 = 71 requests: past 100%
    await roll_up_usage(sessions)
    fired = await _firings(session, customer_id)
    assert sorted(threshold for _, threshold, _ in fired) == [10, 50, 80, 100]
    events = await _events(session, customer_id, "usage_alert.fired")
    assert sorted(Decimal(e["threshold"]) for e in events) == [10, 50, 80, 100], "one webhook event a firing"
    full = next(e for e in events if e["threshold"] == "100")
    assert full["thresholdQuantity"] == "50" and Decimal(full["usedQuantity"]) >= 50 and full["meterKey"] == "requests"
    [exhausted] = await _events(session, customer_id, "entitlement.exhausted")
    assert exhausted["meterKey"] == "requests" and exhausted["limit"] == "50"
    emails = (
        await session.execute(
            text(
                "SELECT locale, recipients, status FROM email_messages WHERE customer_id = :c AND kind = 'usage_alert'"
            ),
            {"c": customer_id},
        )
    ).all()
    assert sorted(emails) == [("de", ["billing@acme.test"], "pending")] * 4, "one email a firing, in German"

    async def evaluate() -> int:
        async with sessions() as racing:
            found = await alerts.evaluate(racing, [customer_id], as_of=now(), window=WINDOW)
            await racing.commit()
            return len(found)

    assert await asyncio.gather(*(evaluate() for _ in range(4))) == [0, 0, 0, 0], "nothing fires twice"
    assert len(await _events(session, customer_id, "entitlement.exhausted")) == 1


async def test_a_new_period_fires_again(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    started = now() - timedelta(days=33)
    customer_id = await _customer(session, "hobby", started_at=started)
    await _alert(
        session,
        customer_id=customer_id,
        metric="usage",
        meter_key="requests",
        threshold_unit="absolute",
        thresholds=(Decimal(3),),
    )
    await _requests(sessions, customer_id, 3, started + timedelta(days=1))
    assert len(await alerts.evaluate(session, [customer_id], as_of=started + timedelta(days=2), window=WINDOW)) == 1
    await session.commit()
    await _requests(sessions, customer_id, 3, now() - timedelta(minutes=1))
    await roll_up_usage(sessions)
    fired = await _firings(session, customer_id)
    assert len(fired) == 2 and fired[0][2] < fired[1][2], "once in each period"


async def test_a_spend_alert_counts_the_running_amount_less_credits(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    """Pro's base fee is 20.00: with 5.00 of credits the running amount is 15.00, so 15 fires and
    20 does not (it would, were credits not subtracted); 50% of 30.00 is 15.00 too."""
    customer_id = await _customer(session, "pro", started_at=now() - timedelta(days=1))
    await grant_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=500,
        reason="goodwill",
        actor="test",
        idempotency_key=f"g-{customer_id}",
        as_of=now(),
    )
    await session.commit()
    upcoming = await billing.upcoming_invoice(session, customer_id, as_of=now(), window=WINDOW)
    assert upcoming is not None and upcoming.draft.subtotal - upcoming.credits_applied == 1500
    await _alert(
        session,
        name="spend",
        customer_id=customer_id,
        metric="spend",
        currency="USD",
        threshold_unit="absolute",
        thresholds=(Decimal(15), Decimal(20)),
    )
    await _alert(
        session,
        name="half",
        customer_id=customer_id,
        metric="spend",
        currency="usd",
        spend_base=Decimal("30.00"),
        thresholds=(Decimal(50), Decimal(60)),
    )
    await _requests(sessions, customer_id, 1, now() - timedelta(minutes=1))
    await roll_up_usage(sessions)
    assert [(name, threshold) for name, threshold, _ in await _firings(session, customer_id)] == [
        ("half", 50),
        ("spend", 15),
    ]
    [first, _] = await _events(session, customer_id, "usage_alert.fired")
    assert first["runningAmount"] == {"amount": 1500, "currency": "USD"}
    assert first["thresholdAmount"] == {"amount": 1500, "currency": "USD"}


async def test_customers_without_alerts_or_limits_cost_one_query(
    session: AsyncSession, catalog: None, sent_statements: list[str]
) -> None:
    customer_id = await _customer(session, "pro", started_at=now() - timedelta(days=1))
    sent_statements.clear()
    assert await alerts.evaluate(session, [customer_id, uuid.uuid4()], as_of=now(), window=WINDOW) == []
    assert len(sent_statements) == 1


async def test_a_customer_whose_evaluation_fails_holds_back_no_other(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = await _customer(session, "pro", started_at=now() - timedelta(days=1))
    fine = await _customer(session, "hobby", started_at=now() - timedelta(days=1))
    await _alert(session, customer_id=failing, metric="spend", currency="USD", threshold_unit="absolute",
                 thresholds=(Decimal(1),))  # fmt: skip
    await _alert(session, customer_id=fine, metric="usage", meter_key="requests", threshold_unit="absolute",
                 thresholds=(Decimal(1),))  # fmt: skip

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the upcoming invoice cannot be composed")

    monkeypatch.setattr(alerts, "upcoming_invoice", broken)
    await _requests(sessions, failing, 1, now() - timedelta(minutes=1))
    await _requests(sessions, fine, 1, now() - timedelta(minutes=1))
    await roll_up_usage(sessions)
    assert await _firings(session, failing) == []
    assert len(await _firings(session, fine)) == 1
