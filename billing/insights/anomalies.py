"""Anomalies: what looks wrong to finance, stored once per (kind, customer, window) with a
severity, a one-line summary and the numbers behind it. Detectors call :func:`billing.findings.raise_anomaly`;
finding the same thing again changes nothing, so an acknowledged or resolved anomaly stays so."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.insights import anomaly_repository as repository
from billing.insights.errors import AlreadyResolved
from billing.models import ANOMALY_SEVERITIES, ANOMALY_STATUSES, Anomaly
from ledger.errors import InvalidInput, NotFound
from ledger.money import plain_decimal

ANOMALY_KINDS = (
    "LEDGER_INVARIANT",
    "USAGE_SPIKE",
    "INVOICE_DELTA",
    "ZERO_USAGE_ACTIVE",
    "DUPLICATE_RATE",
    "QUARANTINE",
    "METERING_LAG",
    "LATE_USAGE",
    "UNRECONCILED",
    "DISPUTE",
    "INVOICE_ACCURACY",
    "BILLING_FAILED",
    "WEBHOOK_ENDPOINT_DISABLED",
)


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Thresholds:
    """The detectors' settings (``TALLY_ANOMALY_*``), as plain values for the billing layer."""

    spike_factor: Decimal = Decimal(3)
    duplicate_factor: Decimal = Decimal(3)
    duplicate_min_events: int = 100
    metering_lag: timedelta = timedelta(hours=1)
    late_usage_share: Decimal = Decimal("0.10")
    lookback: timedelta = timedelta(days=7)
    grace: timedelta = timedelta(hours=1)


def day_start(moment: datetime) -> datetime:
    """The UTC day a window starts on: the same for every scan that day."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ratio(numerator: Decimal, denominator: Decimal) -> str:
    """A ratio for a summary or the numbers: a decimal string to two places, never a float."""
    return str(plain_decimal((numerator / denominator).quantize(Decimal("0.01"))))


def percent(share: Decimal) -> str:
    return f"{ratio(share * 100, Decimal(1))}%"


@dataclass(frozen=True)
class AnomalyFilter:
    since: datetime
    until: datetime | None = None
    kind: str | None = None
    severity: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("kind", self.kind, ANOMALY_KINDS),
            ("severity", self.severity, ANOMALY_SEVERITIES),
            ("status", self.status, ANOMALY_STATUSES),
        ):
            if value is not None and value not in allowed:
                raise InvalidInput(f"unknown {name} {value!r}: use one of {', '.join(allowed)}", field=name)


async def anomalies(
    session: AsyncSession, selection: AnomalyFilter, *, after: tuple[int, datetime, uuid.UUID] | None, limit: int
) -> list[tuple[Anomaly, int]]:
    """A page of anomalies, ledger invariants first, then critical ones, then newest first; each
    with the rank its cursor needs."""
    return await repository.anomalies_page(
        session,
        since=selection.since,
        until=selection.until,
        kind=selection.kind,
        severity=selection.severity,
        status=selection.status,
        after=after,
        limit=limit,
    )


async def acknowledge(session: AsyncSession, anomaly_id: uuid.UUID, *, actor: str, as_of: datetime) -> Anomaly:
    """Someone is looking at it. Acknowledging twice keeps the first; a resolved one stays resolved."""
    anomaly = await _for_update(session, anomaly_id)
    if anomaly.status == "resolved":
        raise AlreadyResolved("this anomaly is already resolved", field="anomalyId")
    if anomaly.status == "open":
        anomaly.status, anomaly.status_by, anomaly.status_at = "acknowledged", actor, as_of
        session.add(anomaly)
        await session.flush()
    return anomaly


async def resolve(session: AsyncSession, anomaly_id: uuid.UUID, *, note: str, actor: str, as_of: datetime) -> Anomaly:
    """Close it with a note saying what was found or done; the note is the audit trail, so it
    is required, and a resolution is final."""
    note = note.strip()
    if not note:
        raise InvalidInput("say what was found or done: a resolution needs a note", field="note")
    anomaly = await _for_update(session, anomaly_id)
    if anomaly.status == "resolved":
        raise AlreadyResolved("this anomaly is already resolved", field="anomalyId")
    anomaly.status, anomaly.note, anomaly.status_by, anomaly.status_at = "resolved", note, actor, as_of
    session.add(anomaly)
    await session.flush()
    return anomaly


async def _for_update(session: AsyncSession, anomaly_id: uuid.UUID) -> Anomaly:
    anomaly = await repository.anomaly_for_update(session, anomaly_id)
    if anomaly is None:
        raise NotFound("no such anomaly", field="anomalyId")
    return anomaly
