"""A finding and the one write that stores it as an anomaly: every part of billing that notices
something wrong (a detector, a failed billing run, a dispute, an accuracy check) raises it here, so
this sits below all of them. Stored once per (kind, customer, window): finding the same thing again
changes nothing, so an acknowledged or resolved anomaly stays so."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import findings_repository
from billing.webhook_payloads import anomaly_data
from notifications.webhook_events import Event, emit


@dataclass(frozen=True)
class Finding:
    kind: str
    customer_id: uuid.UUID | None
    window_start: datetime
    window_end: datetime
    severity: str
    summary: str
    numbers: dict[str, Any]


async def raise_anomaly(session: AsyncSession, finding: Finding, *, as_of: datetime) -> bool:
    """Store a finding unless it is already known; True when it is new, and then (only then) the
    product is told ``anomaly.opened``."""
    anomaly_id = uuid.uuid4()
    stored = await findings_repository.insert_anomaly_once(
        session,
        anomaly_id,
        kind=finding.kind,
        customer_id=finding.customer_id,
        window_start=finding.window_start,
        window_end=finding.window_end,
        severity=finding.severity,
        summary=finding.summary,
        numbers=finding.numbers,
        detected_at=as_of,
    )
    if not stored:
        return False
    data = anomaly_data(
        anomaly_id,
        kind=finding.kind,
        severity=finding.severity,
        summary=finding.summary,
        numbers=finding.numbers,
        window_start=finding.window_start,
        window_end=finding.window_end,
        detected_at=as_of,
    )
    event = Event(
        f"anomaly.opened:{anomaly_id}", "anomaly.opened", "Anomaly", str(anomaly_id), data, finding.customer_id
    )
    await emit(session, event, as_of=as_of)
    return True
