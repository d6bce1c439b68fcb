"""Anomalies: what looks wrong to finance, stored once per (kind, customer, window) with a
severity, a one-line summary and the numbers behind it. Detectors call :func:`raise_anomaly`;
finding the same thing again changes nothing, so an acknowledged or resolved anomaly stays so."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


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
    """Store a finding unless it is already known; True when it is new."""
    row = await session.execute(
        text(
            "INSERT INTO anomalies (id, kind, customer_id, window_start, window_end, severity, summary, numbers, "
            "detected_at, status) VALUES (:id, :kind, :customer_id, :window_start, :window_end, :severity, :summary, "
            "CAST(:numbers AS jsonb), :as_of, 'open') "
            "ON CONFLICT (kind, customer_id, window_start) DO NOTHING RETURNING id"
        ),
        {
            "id": uuid.uuid4(),
            "kind": finding.kind,
            "customer_id": finding.customer_id,
            "window_start": finding.window_start,
            "window_end": finding.window_end,
            "severity": finding.severity,
            "summary": finding.summary,
            "numbers": json.dumps(finding.numbers, default=str),
            "as_of": as_of,
        },
    )
    return row.first() is not None
