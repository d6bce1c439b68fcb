"""SQL of findings: the one insert that stores a finding as an anomaly, beside :mod:`billing.findings`
and, like it, below all of billing's packages."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


async def insert_anomaly_once(
    session: AsyncSession,
    anomaly_id: uuid.UUID,
    *,
    kind: str,
    customer_id: uuid.UUID | None,
    window_start: datetime,
    window_end: datetime,
    severity: str,
    summary: str,
    numbers: dict[str, Any],
    detected_at: datetime,
) -> bool:
    """Insert an open anomaly unless one of this (kind, customer, window start) exists, whatever its
    status; True when this call stored it."""
    row = await session.execute(
        text(
            "INSERT INTO anomalies (id, kind, customer_id, window_start, window_end, severity, summary, numbers, "
            "detected_at, status) VALUES (:id, :kind, :customer_id, :window_start, :window_end, :severity, :summary, "
            "CAST(:numbers AS jsonb), :as_of, 'open') "
            "ON CONFLICT (kind, customer_id, window_start) DO NOTHING RETURNING id"
        ),
        {
            "id": anomaly_id,
            "kind": kind,
            "customer_id": customer_id,
            "window_start": window_start,
            "window_end": window_end,
            "severity": severity,
            "summary": summary,
            "numbers": json.dumps(numbers, default=str),
            "as_of": detected_at,
        },
    )
    return row.first() is not None
