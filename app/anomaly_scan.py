"""The anomaly scan as `tally anomalies scan` and the job in `tally serve` run it: the detectors'
thresholds from the settings, one committed transaction for the whole scan."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.insights.anomalies import Thresholds
from billing.insights.detectors import ScanReport, scan


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


async def scan_anomalies(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    as_of: datetime,
    on_detector: Callable[[str], None] = lambda kind: None,
) -> ScanReport:
    async with sessions() as session:
        report = await scan(session, as_of=as_of, thresholds=thresholds(settings), on_detector=on_detector)
        await session.commit()
    return report
