"""The request boundary of usage ingestion, shared by `POST /v1/events` and `ingestUsage`:
one transaction per batch, committed before answering, retried whole on a deadlock or a
serialization failure (safe: the event ids make a retried batch count nothing twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from app.settings import Settings
from app.telemetry import current_trace_id
from metering.service import IngestLimits, IngestResult, ingest


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_age=timedelta(days=settings.event_max_age_days),
        max_properties_bytes=settings.event_properties_max_bytes,
    )


async def ingest_and_commit(session: AsyncSession, items: list[Any], settings: Settings) -> IngestResult:
    """Ingest and commit; a 200 after this means every accepted event is durable and counted."""
    received_at = datetime.now(UTC)
    result = await in_transaction(
        session,
        lambda: ingest(
            session, items, received_at=received_at, limits=ingest_limits(settings), trace_id=current_trace_id()
        ),
    )
    result.observe()
    return result
