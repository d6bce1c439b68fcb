"""Metering over time: volumes and lag percentiles per bucket from the recorded batches, and
watermark snapshots taken by the job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import roll_up_usage, snapshot_metering
from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from customers.service import NewCustomer, create_customer
from metering.service import history
from tests.conftest import now


def event(event_id: str, customer: str, at: datetime) -> dict[str, object]:
    return {
        "id": event_id,
        "customer": customer,
        "type": "request.completed",
        "timestamp": at.isoformat(),
        "properties": {"model": "fast-1"},
    }


async def send_late_usage(session: AsyncSession) -> datetime:
    """Three events ten minutes old for one customer, then a retry of one and an invalid event."""
    await create_customer(session, NewCustomer(external_id="org_hist", name="Hist", currency="USD"), as_of=now())
    await session.commit()
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    events = [event(f"hist-{i}", "org_hist", ten_minutes_ago) for i in range(3)]
    await ingest_and_commit(session, events, Settings())
    await ingest_and_commit(session, [events[0], {"id": ""}], Settings())
    return ten_minutes_ago


async def test_history_buckets_volumes_and_lags_and_the_job_snapshots_watermarks(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], catalog: None
) -> None:
    sent_at = await send_late_usage(session)
    current_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await roll_up_usage(sessions)
    await snapshot_metering(sessions, as_of=datetime.now(UTC))
    points, watermarks = await history(
        session,
        since=current_hour - timedelta(hours=2),
        until=current_hour + timedelta(hours=1),
        bucket=timedelta(hours=1),
    )
    assert [p.start for p in points] == [
        current_hour - timedelta(hours=2),
        current_hour - timedelta(hours=1),
        current_hour,
    ]
    earlier, latest = points[:2], points[2]
    assert [(p.accepted, p.ingest_lag_p50_ms) for p in earlier] == [(0, None), (0, None)], "empty hours are zero"
    assert (latest.accepted, latest.duplicates, latest.rejected) == (3, 1, 1)
    assert latest.ingest_lag_p50_ms is not None and latest.ingest_lag_p50_ms >= 10 * 60 * 1000
    [snapshot] = watermarks
    assert snapshot.active_customers == 1 and snapshot.quarantined == 0
    age = (snapshot.taken_at - sent_at).total_seconds() * 1000
    assert snapshot.watermark_age_p50_ms == snapshot.watermark_age_max_ms
    assert snapshot.watermark_age_p50_ms is not None and abs(snapshot.watermark_age_p50_ms - age) <= 1
