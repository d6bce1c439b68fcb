"""A Stripe event that cannot be processed never blocks the ones after it: it is parked ``failed``
with its error and attempts, counted, retried with backoff when it raised unexpectedly, kept for a
hand when it was refused (an unknown currency, an amount beyond BIGINT: nothing posted), and
queued again by hand from GraphQL."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import process_stripe_events
from app.metrics import refresh_gauges
from app.settings import Settings
from app.staff import create_user
from tests.app.test_metrics import parse, value
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import event_of, fixture_with, signed
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in
from tests.console.test_payments_console import section

T = JAN_31 + timedelta(days=3)
RETRY = """mutation($id: String!) { retryStripeEvent(input: {eventId: $id}) {
  event { id status attempts nextAttemptAt } userErrors { field code } } }"""


async def deliver_payout(client: httpx.AsyncClient, event_id: str, created: int, **payout: Any) -> None:
    obj = fixture_with("payout", **{"status": "paid", "currency": "usd", **payout})
    payload = event_of("payout.paid", obj, event_id, created=created)
    answer = await client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": signed(payload)})
    assert answer.status_code == 200, answer.text


async def events(session: AsyncSession) -> dict[str, tuple[str, int, datetime | None]]:
    rows = await session.execute(text("SELECT id, status, attempts, next_attempt_at FROM stripe_events"))
    return {row.id: (row.status, row.attempts, row.next_attempt_at) for row in rows}


async def errors(session: AsyncSession) -> dict[str, str]:
    return dict(tuple(row) for row in await session.execute(text("SELECT id, error FROM stripe_events")))  # type: ignore[misc]


async def posted_for(session: AsyncSession, payout_id: str) -> int:
    row = await session.execute(
        text("SELECT count(*) FROM ledger_transactions WHERE idempotency_key LIKE :key"), {"key": f"%{payout_id}%"}
    )
    return int(row.scalar_one())


async def test_failing_events_are_parked_counted_retried_and_never_block_the_queue(
    webhook_client: httpx.AsyncClient, session: AsyncSession, sessions: Any, settings: Settings, token_for
) -> None:
    settings = settings.model_copy(update={"stripe_event_max_attempts": 2})
    # The database refuses one payout's posting, as a full disk or a bug would: an unexpected error.
    await session.execute(
        text("""
        CREATE FUNCTION refuse_po_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.idempotency_key LIKE '%po_boom%' THEN RAISE EXCEPTION 'disk full'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_po_boom BEFORE INSERT ON ledger_transactions
        FOR EACH ROW EXECUTE FUNCTION refuse_po_boom();
        """)
    )
    await session.commit()
    created = int(time.time()) - 100
    await deliver_payout(webhook_client, "evt_huge", created, id="po_huge", amount=2**63)
    await deliver_payout(webhook_client, "evt_xyz", created + 1, id="po_xyz", amount=500, currency="xyz")
    await deliver_payout(webhook_client, "evt_boom", created + 2, id="po_boom", amount=700)
    await deliver_payout(webhook_client, "evt_good", created + 3, id="po_good", amount=1000)
    before = parse((await webhook_client.get("/metrics")).text)

    assert await process_stripe_events(sessions, settings, as_of=T) == 4
    assert await events(session) == {
        "evt_huge": ("failed", 1, None),  # refused: the same payload would be refused again
        "evt_xyz": ("failed", 1, None),
        "evt_boom": ("failed", 1, T + timedelta(minutes=5)),  # unexpected: tried again with backoff
        "evt_good": ("processed", 1, None),  # the events before it did not hold it up
    }
    why = await errors(session)
    assert "beyond what the ledger holds" in why["evt_huge"] and "unknown currency 'xyz'" in why["evt_xyz"]
    assert why["evt_boom"] == "RaiseException: disk full"
    assert [await posted_for(session, p) for p in ("po_huge", "po_xyz", "po_boom", "po_good")] == [0, 0, 0, 1]
    assert (await session.execute(text("SELECT count(*) FROM ledger_accounts WHERE currency = 'XYZ'"))).scalar() == 0
    after = parse((await webhook_client.get("/metrics")).text)
    assert value(after, "tally_stripe_webhooks_failed") == 3, "the failure gauge counts every parked event"
    failures = value(after, "tally_stripe_events_failures_total", type="payout.paid")
    assert failures - value(before, "tally_stripe_events_failures_total", type="payout.paid") == 3

    assert await process_stripe_events(sessions, settings, as_of=T + timedelta(minutes=4)) == 0, "not due yet"
    assert await process_stripe_events(sessions, settings, as_of=T + timedelta(minutes=5)) == 1
    assert (await events(session))["evt_boom"] == ("failed", 2, None), "its last automatic try: now by hand"
    assert await process_stripe_events(sessions, settings, as_of=T + timedelta(days=1)) == 0

    # What made it fail is fixed; finance queues it again, and the next run posts it once.
    await session.execute(text("DROP TRIGGER refuse_po_boom ON ledger_transactions"))
    await session.commit()
    finance = await token_for("finance")
    retried = (await graphql(webhook_client, finance, RETRY, {"id": "evt_boom"})).json()["data"]["retryStripeEvent"]
    assert retried == {
        "event": {"id": "evt_boom", "status": "received", "attempts": 2, "nextAttemptAt": None},
        "userErrors": [],
    }
    processed = (await graphql(webhook_client, finance, RETRY, {"id": "evt_good"})).json()["data"]
    assert processed["retryStripeEvent"]["userErrors"] == [{"field": ["eventId"], "code": "NOT_FOUND"}]
    assert await process_stripe_events(sessions, settings, as_of=T + timedelta(days=1)) == 1
    assert (await events(session))["evt_boom"] == ("processed", 3, None)
    assert await posted_for(session, "po_boom") == 1
    assert (await refresh_gauges(session, as_of=T)).webhooks_failed == 2


async def test_finance_sees_failed_events_on_the_reconciliation_page_and_retries_one(
    webhook_client: httpx.AsyncClient, session: AsyncSession
) -> None:
    for email, role in (("fin@example.com", "finance"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    await session.execute(
        text(
            "INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, received_at, deliveries, "
            "status, error, attempts, next_attempt_at) VALUES ('evt_stuck', 'payout.paid', 'po_stuck', :at, false, "
            "'{}', :at, 1, 'failed', 'OperationalError: the server closed the connection', 3, :retry_at)"
        ),
        {"at": JAN_31, "retry_at": JAN_31 + timedelta(minutes=20)},
    )
    await session.commit()
    await sign_in(webhook_client, "fin@example.com", PASSWORD)
    page = (await webhook_client.get("/console/reconciliation")).text
    failed = section(page, "failed-stripe-events")
    assert "OperationalError: the server closed the connection" in failed and '<td class="num">3</td>' in failed
    assert "2026-01-31 00:20" in failed, "when it is tried next"
    assert 'action="/console/reconciliation/stripe-events/evt_stuck/retry"' in failed
    retried = await webhook_client.post(
        "/console/reconciliation/stripe-events/evt_stuck/retry", data={"csrftoken": csrf_of(page)}
    )
    assert retried.status_code == 303
    assert "queued again" in (await webhook_client.get(retried.headers["location"])).text
    status = (await session.execute(text("SELECT status FROM stripe_events WHERE id = 'evt_stuck'"))).scalar_one()
    assert status == "received"
    await webhook_client.post("/console/logout", data={"csrftoken": csrf_of(page)})
    await sign_in(webhook_client, "ro@example.com", PASSWORD)
    page = (await webhook_client.get("/console/customers")).text
    refused = await webhook_client.post(
        "/console/reconciliation/stripe-events/evt_stuck/retry", data={"csrftoken": csrf_of(page)}
    )
    assert refused.status_code == 403
