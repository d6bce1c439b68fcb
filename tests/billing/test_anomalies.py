"""Anomaly detectors against the real database: each fires on a planted situation and stays
silent on a normal one beside it; a second scan stores nothing twice; the demo's normal month
raises nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.insights.anomalies import AnomalyFilter, Thresholds, anomalies
from billing.insights.detectors import scan
from billing.insights.usage_anomalies import metering_lag
from billing.models import Anomaly
from ledger.grants import grant_credits
from metering.log_backlog import LogBacklog, LogState, PartitionBacklog
from metering.service import ingest, roll_up
from tests.billing.scenario import FEB_28, JAN_31, LIMITS, MAR_31, send_calls, subscribe

THRESHOLDS = Thresholds()


async def scanned(session: AsyncSession, as_of: datetime, kind: str | None = None) -> list[Anomaly]:
    """Scan as of then and return what is stored (of one kind), committed like the job does, once
    the roller has folded the usage counted so far (it runs every half second in `tally serve`)."""
    await roll_up(session)
    await scan(session, as_of=as_of, thresholds=THRESHOLDS)
    await session.commit()
    return await stored(session, kind)


async def stored(session: AsyncSession, kind: str | None = None) -> list[Anomaly]:
    rows = await anomalies(
        session, AnomalyFilter(since=datetime(2000, 1, 1, tzinfo=UTC), kind=kind), after=None, limit=500
    )
    return [row for row, _ in rows]


async def test_usage_spike_above_three_times_the_14_day_median(session: AsyncSession, billing_catalog: None) -> None:
    spiky = await subscribe(session, "spiky", "basic", JAN_31)
    await subscribe(session, "steady", "basic", JAN_31)
    await subscribe(session, "newcomer", "basic", JAN_31)
    first_day = datetime(2026, 2, 1, 12, tzinfo=UTC)
    for day in range(14):
        await send_calls(session, "spiky", 10 + day % 3, first_day + timedelta(days=day))  # median 11
        await send_calls(session, "steady", 10, first_day + timedelta(days=day))
    for day in range(8, 14):
        await send_calls(session, "newcomer", 2, first_day + timedelta(days=day))  # 6 days of history
    spike_day = first_day + timedelta(days=14)
    await send_calls(session, "spiky", 40, spike_day)  # 40 > 3 x 11
    await send_calls(session, "steady", 30, spike_day)  # 30 <= 3 x 10
    await send_calls(session, "newcomer", 50, spike_day)

    found = await scanned(session, spike_day + timedelta(hours=14), "USAGE_SPIKE")

    assert [a.customer_id for a in found] == [spiky]
    spike = found[0]
    assert spike.window_start == datetime(2026, 2, 15, tzinfo=UTC)
    assert spike.window_end - spike.window_start == timedelta(days=1)
    assert spike.numbers["meters"] == [
        {"meter": "calls", "unit": "call", "quantity": "40", "median": "11", "ratio": "3.64", "historyDays": 14}
    ]
    assert "calls on 2026-02-15: 40 call, 3.64x the 14-day median of 11" in spike.summary
    assert spike.severity == "medium" and spike.status == "open"


async def test_invoice_delta_outside_half_of_the_median_of_the_three_before(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    jumpy = await subscribe(session, "jumpy", "basic", JAN_31)
    await subscribe(session, "steady", "basic", JAN_31)
    closes = [FEB_28, MAR_31, datetime(2026, 4, 30, tzinfo=UTC), datetime(2026, 5, 31, tzinfo=UTC)]
    for index, close in enumerate(closes):
        await send_calls(session, "steady", 150, close - timedelta(days=5))
        await send_calls(session, "jumpy", 1150 if index == 3 else 150, close - timedelta(days=5))
        await run_billing(sessions, settings, as_of=close + timedelta(hours=1))

    found = await scanned(session, closes[-1] + timedelta(hours=2), "INVOICE_DELTA")

    # Each period invoice: usage over 100 included calls at 0.10, plus the next month's 10.00.
    assert [a.customer_id for a in found] == [jumpy]
    delta = found[0]
    assert (delta.numbers["total"], delta.numbers["median"], delta.numbers["currency"]) == (11500, 1500, "USD")
    assert delta.numbers["previousTotals"] == [1500, 1500, 1500]
    assert (delta.window_start, delta.window_end) == (closes[2], closes[3])
    assert "total 115.00 USD is +667% against the median 15.00 USD of the 3 before it" in delta.summary
    assert delta.severity == "high"


async def test_zero_usage_on_a_paying_plan_for_a_whole_closed_period(
    session: AsyncSession, billing_catalog: None
) -> None:
    idle = await subscribe(session, "idle", "basic", JAN_31)
    await subscribe(session, "busy", "basic", JAN_31)
    await send_calls(session, "busy", 3, datetime(2026, 2, 10, tzinfo=UTC))

    assert await scanned(session, FEB_28 + timedelta(minutes=30), "ZERO_USAGE_ACTIVE") == []  # grace not over
    found = await scanned(session, FEB_28 + timedelta(hours=2), "ZERO_USAGE_ACTIVE")

    assert [(a.customer_id, a.window_start, a.window_end) for a in found] == [(idle, JAN_31, FEB_28)]
    assert found[0].numbers == {"plan": "basic", "currency": "USD", "baseFee": 1000, "charges": 1, "events": 0}


async def send_edge_batch(session: AsyncSession, ids: list[str], received_at: datetime) -> None:
    events = [
        {"id": i, "customer": "edge", "type": "api.call", "timestamp": received_at.isoformat(), "properties": {}}
        for i in ids
    ]
    await ingest(session, events, received_at=received_at, limits=LIMITS, trace_id=None)
    await session.commit()


async def test_duplicate_rate_jumping_above_its_weekly_baseline(session: AsyncSession, billing_catalog: None) -> None:
    await subscribe(session, "edge", "basic", JAN_31)
    noon = datetime(2026, 2, 10, 12, tzinfo=UTC)
    # The week before: 1% of what the edge sent was a retry.
    for day in range(1, 4):
        ids = [f"base-{day}-{i}" for i in range(198)]
        await send_edge_batch(session, ids, noon - timedelta(days=day))
        await send_edge_batch(session, ids[:2], noon - timedelta(days=day, minutes=-1))
    # 11:00-12:00, as usual: 1%.
    usual = [f"usual-{i}" for i in range(198)]
    await send_edge_batch(session, usual, noon - timedelta(minutes=50))
    await send_edge_batch(session, usual[:2], noon - timedelta(minutes=40))
    assert await scanned(session, noon + timedelta(minutes=5), "DUPLICATE_RATE") == []

    # 12:00-13:00: half of it retries.
    retried = [f"retried-{i}" for i in range(100)]
    await send_edge_batch(session, retried, noon + timedelta(minutes=10))
    await send_edge_batch(session, retried, noon + timedelta(minutes=20))
    found = await scanned(session, noon + timedelta(hours=1, minutes=5), "DUPLICATE_RATE")

    assert len(found) == 1 and found[0].customer_id is None
    assert (found[0].window_start, found[0].window_end) == (noon, noon + timedelta(hours=1))
    numbers = found[0].numbers
    assert (numbers["events"], numbers["duplicates"], numbers["share"]) == (200, 100, "0.5000")
    assert (numbers["baselineEvents"], numbers["baselineDuplicates"]) == (800, 8)
    assert found[0].severity == "high"


async def test_quarantine_waiting_over_an_hour(session: AsyncSession, billing_catalog: None) -> None:
    received = datetime(2026, 2, 10, 12, 30, tzinfo=UTC)
    ghost = [
        {"id": f"ghost-{i}", "customer": "ghost", "type": "api.call", "timestamp": received.isoformat()}
        for i in range(3)
    ]
    await ingest(session, ghost, received_at=received, limits=LIMITS, trace_id=None)
    await session.commit()

    assert await scanned(session, received + timedelta(minutes=59), "QUARANTINE") == []
    found = await scanned(session, received + timedelta(hours=2), "QUARANTINE")

    assert len(found) == 1
    assert found[0].numbers["waiting"] == 3 and found[0].window_start == datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert "3 event(s) waiting in quarantine for over an hour, the oldest for 2 h" in found[0].summary


async def test_metering_lag_when_counted_usage_trails_what_the_edge_sends(
    session: AsyncSession, billing_catalog: None
) -> None:
    late = await subscribe(session, "late", "basic", JAN_31)
    await subscribe(session, "prompt", "basic", JAN_31)
    await subscribe(session, "quiet", "basic", JAN_31)
    now = datetime(2026, 2, 10, 12, tzinfo=UTC)
    await send_calls(session, "late", 5, now - timedelta(hours=3), received=now)
    await send_calls(session, "prompt", 5, now - timedelta(minutes=2), received=now)
    await send_calls(session, "quiet", 5, now - timedelta(days=3))  # sends nothing since: quiet, not lagging

    found = await scanned(session, now + timedelta(minutes=5), "METERING_LAG")

    assert [a.customer_id for a in found] == [late]
    assert (found[0].numbers["lagMinutes"], found[0].numbers["thresholdMinutes"]) == (180, 60)
    assert found[0].window_start == now - timedelta(hours=3)


async def test_metering_lag_counts_the_event_logs_oldest_message_plus_the_rollers_wait(
    session: AsyncSession, billing_catalog: None
) -> None:
    """Edge mode: 50 minutes in the event log and 15 waiting for the roller is 65 minutes behind, past
    the hour's threshold, though no watermark trails (the log's events are not in PostgreSQL yet);
    once the roller caught up, the 50 minutes in the log alone are within it."""
    await subscribe(session, "edge", "basic", JAN_31)
    now = datetime.now(UTC)
    await send_calls(session, "edge", 3, now - timedelta(minutes=2), received=now)  # counted now, not rolled up
    as_of = now + timedelta(minutes=15)
    backlog = LogBacklog(
        LogState.READ,
        as_of,
        (
            PartitionBacklog(0, "tally.events.0", 0, None),
            PartitionBacklog(1, "tally.events.1", 7, as_of - timedelta(minutes=50)),
        ),
    )

    await scan(session, as_of=as_of, thresholds=THRESHOLDS)
    assert await stored(session, "METERING_LAG") == [], "PostgreSQL alone shows no lag"
    await scan(session, as_of=as_of, thresholds=THRESHOLDS, log_backlog=backlog)
    await session.commit()
    found = await stored(session, "METERING_LAG")

    assert len(found) == 1 and found[0].customer_id is None
    assert 64 <= found[0].numbers["lagMinutes"] <= 65
    assert found[0].numbers["logOldestPendingSeconds"] == 50 * 60 and found[0].numbers["logPending"] == 7
    assert found[0].numbers["logBusiestPartition"] == 1
    assert 899 <= found[0].numbers["rollUpWaitSeconds"] <= 900
    assert "7 message(s) wait in the event log" in found[0].summary
    await roll_up(session)
    await session.commit()
    assert await metering_lag(session, as_of, THRESHOLDS, log_backlog=backlog) == []


async def test_late_usage_above_a_tenth_of_an_invoice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    tardy = await subscribe(session, "tardy", "basic", JAN_31)
    await subscribe(session, "punctual", "basic", JAN_31)
    for customer in ("tardy", "punctual"):
        await send_calls(session, customer, 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    # 200 calls of February arrive in March, after February was invoiced.
    await send_calls(
        session, "tardy", 200, datetime(2026, 2, 20, tzinfo=UTC), received=datetime(2026, 3, 5, tzinfo=UTC)
    )
    await run_billing(sessions, settings, as_of=MAR_31 + timedelta(hours=1))

    found = await scanned(session, MAR_31 + timedelta(hours=2), "LATE_USAGE")

    assert [a.customer_id for a in found] == [tardy]
    numbers = found[0].numbers
    # March's invoice: 20.00 of late February usage and April's 10.00 base fee.
    assert (numbers["lateAmount"], numbers["subtotal"], numbers["currency"]) == (2000, 3000, "USD")
    assert numbers["share"] == "0.6667" and found[0].severity == "high"
    assert (found[0].window_start, found[0].window_end) == (FEB_28, MAR_31)


async def test_unreconciled_one_finding_per_customer_and_day(session: AsyncSession, billing_catalog: None) -> None:
    customer = await subscribe(session, "payer", "basic", JAN_31)
    seen = datetime(2026, 2, 10, 6, tzinfo=UTC)
    for kind, object_id, status, at in (
        ("AMOUNT_MISMATCH", "pi_1", "open", seen),
        ("MISSING_IN_STRIPE", "pi_2", "open", seen + timedelta(hours=3)),
        ("STATUS_MISMATCH", "pi_3", "resolved", seen),
        ("MISSING_IN_TALLY", "pi_4", "open", seen + timedelta(days=1)),
    ):
        await session.execute(
            text(
                "INSERT INTO reconciliation_discrepancies (id, kind, object_id, customer_id, summary, detected_at, "
                "last_seen_at, status) VALUES (:id, :kind, :object_id, :customer_id, :summary, :at, :at, :status)"
            ),
            {
                "id": uuid.uuid4(),
                "kind": kind,
                "object_id": object_id,
                "customer_id": customer,
                "summary": f"{object_id} differs",
                "at": at,
                "status": status,
            },
        )
    await session.commit()

    found = await scanned(session, seen + timedelta(days=2), "UNRECONCILED")

    by_day = {a.window_start: a for a in found}
    assert sorted(by_day) == [datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 2, 11, tzinfo=UTC)]
    first_day = by_day[datetime(2026, 2, 10, tzinfo=UTC)]
    assert [d["objectId"] for d in first_day.numbers["discrepancies"]] == ["pi_1", "pi_2"]
    assert first_day.summary == "2 open difference(s) with Stripe: AMOUNT_MISMATCH pi_1 differs (and 1 more)"


async def test_ledger_invariant_is_critical_and_listed_first(session: AsyncSession, billing_catalog: None) -> None:
    customer = await subscribe(session, "credited", "basic", JAN_31)
    await grant_credits(
        session,
        customer_id=customer,
        currency="USD",
        amount=500,
        reason="goodwill",
        actor="test",
        idempotency_key="grant-1",
        as_of=JAN_31,
    )
    await session.commit()
    later = datetime(2026, 2, 10, tzinfo=UTC)
    assert await scanned(session, later, "LEDGER_INVARIANT") == []
    # An older, non-critical anomaly, to be listed after the invariant.
    await session.execute(
        text(
            "INSERT INTO reconciliation_discrepancies (id, kind, object_id, summary, detected_at, last_seen_at, status) "
            "VALUES (:id, 'DUPLICATE', 'ch_1', 'charged twice', :at, :at, 'open')"
        ),
        {"id": uuid.uuid4(), "at": later},
    )
    await session.commit()
    await scanned(session, later + timedelta(hours=1))

    tampered = "UPDATE ledger_accounts SET balance = balance + :delta WHERE customer_id = :customer"
    await session.execute(text(tampered), {"delta": 1, "customer": customer})
    await session.commit()
    try:
        everything = await scanned(session, later - timedelta(days=1))
    finally:
        await session.execute(text(tampered), {"delta": -1, "customer": customer})
        await session.commit()

    assert [a.kind for a in everything][:2] == ["LEDGER_INVARIANT", "UNRECONCILED"]
    invariant = everything[0]
    assert invariant.severity == "critical" and invariant.customer_id is None
    assert invariant.numbers["violations"][0]["check"] == "cached balance differs from postings"
    assert invariant.summary.startswith("1 ledger invariant violation(s): cached balance differs from postings")


async def test_scanning_again_stores_nothing_twice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    await subscribe(session, "idle", "basic", JAN_31)
    received = FEB_28 + timedelta(minutes=30)
    ghost = [{"id": "ghost", "customer": "ghost", "type": "api.call", "timestamp": received.isoformat()}]
    await ingest(session, ghost, received_at=received, limits=LIMITS, trace_id=None)
    await session.commit()
    as_of = FEB_28 + timedelta(hours=3)

    first = await scan(session, as_of=as_of, thresholds=THRESHOLDS)
    await session.commit()
    acknowledged = await session.execute(text("UPDATE anomalies SET status = 'acknowledged' RETURNING id"))
    assert len(acknowledged.all()) == 2
    await session.commit()
    again = await scan(session, as_of=as_of + timedelta(minutes=50), thresholds=THRESHOLDS)
    await session.commit()

    assert (first.new["ZERO_USAGE_ACTIVE"], first.new["QUARANTINE"]) == (1, 1)
    assert again.found == first.found and sum(again.new.values()) == 0
    statuses = (await session.execute(text("SELECT status, count(*) FROM anomalies GROUP BY status"))).all()
    assert [tuple(row) for row in statuses] == [("acknowledged", 2)]


def test_thresholds_come_from_the_settings(settings: Settings) -> None:
    from app.anomaly_scan import thresholds

    configured = thresholds(settings.model_copy(update={"anomaly_spike_factor": Decimal(5)}))
    assert configured.spike_factor == 5 and configured.late_usage_share == Decimal("0.10")
    assert configured.metering_lag == timedelta(hours=1) and configured.grace == timedelta(hours=1)


async def test_a_normal_month_of_demo_usage_raises_only_its_first_usage_invoices_and_quarantine(
    session: AsyncSession,
) -> None:
    from app.demo import load_demo

    # At noon: the demo sends past days as daily backfills, which just after midnight would
    # rightly look like events arriving hours late.
    as_of = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    await load_demo(session, as_of=as_of)
    await session.commit()

    found = await scanned(session, as_of + timedelta(minutes=30))
    # The demo's customers have months of base-fee-only invoices before its month of usage: their
    # first invoice with usage is a real jump over a flat history. Nothing else looks wrong.
    assert {a.kind for a in found} <= {"INVOICE_DELTA"}
    for delta in found:
        previous = delta.numbers["previousTotals"]
        assert len(set(previous)) == 1 and delta.numbers["total"] > previous[0], delta.summary
    # It also leaves three events of a customer that does not exist yet in quarantine: an hour
    # later they are the one new thing worth saying.
    later = await scanned(session, as_of + timedelta(hours=1, minutes=30))
    new = [a for a in later if a.id not in {f.id for f in found}]
    assert [(a.kind, a.numbers["waiting"]) for a in new] == [("QUARANTINE", 3)]
