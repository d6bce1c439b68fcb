"""The anomaly scan as `tally anomalies scan` and the job in `tally serve` run it: the detectors'
thresholds from the settings, one committed transaction for the whole scan."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.usage_ingest import log_config
from billing.insights.anomalies import Thresholds
from billing.insights.detectors import ScanReport, scan
from metering.event_log import EventLog
from metering.log_backlog import LogBacklog, read_backlog


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        spike_factor=settings.anomaly_spike_factor,
        duplicate_factor=settings.anomaly_duplicate_factor,
        duplicate_min_events=settings.anomaly_duplicate_min_events,
        metering_lag=timedelta(minutes=settings.anomaly_metering_lag_minutes),
        late_usage_share=settings.anomaly_late_usage_share,
        lookback=timedelta(days=settings.anomaly_lookback_days),
        grace=timedelta(minutes=settings.billing_grace_minutes),
    )


async def event_log_backlog(settings: Settings, *, as_of: datetime) -> LogBacklog | None:
    """The event log's backlog for METERING_LAG, or None without a log (or when it cannot be read:
    the scan then judges what PostgreSQL has, and the Metering page shows the log unreachable)."""
    if not settings.nats_servers:
        return None
    event_log = EventLog(log_config(settings))
    try:
        # A scan may wait as long as a publish would, for a connection made afresh.
        backlog = await read_backlog(event_log, as_of=as_of, wait_seconds=settings.nats_publish_timeout_seconds)
    finally:
        await event_log.close()
    return backlog if backlog.partitions else None


async def scan_anomalies(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    as_of: datetime,
    on_detector: Callable[[str], None] = lambda kind: None,
) -> ScanReport:
    log_backlog = await event_log_backlog(settings, as_of=as_of)
    async with sessions() as session:
        report = await scan(
            session, as_of=as_of, thresholds=thresholds(settings), log_backlog=log_backlog, on_detector=on_detector
        )
        await session.commit()
    return report
