"""Periodic jobs run inside `tally serve`. Each job commits its own work; a failure is logged
and retried at the next tick rather than stopping the server."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import trace_store
from app.settings import Settings

logger = logging.getLogger("tally.jobs")
TICK_SECONDS = 300


async def prune_spans(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime) -> int:
    """Keep the span store bounded to ``TALLY_SPAN_RETENTION_HOURS``."""
    async with sessions() as session:
        removed = await trace_store.prune_spans(
            session, older_than=as_of - timedelta(hours=settings.span_retention_hours)
        )
        await session.commit()
    return removed


async def run_periodic(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    while True:
        try:
            await prune_spans(sessions, settings, as_of=datetime.now(UTC))
        except Exception:
            logger.exception("span pruning failed; retrying at the next tick")
        await asyncio.sleep(TICK_SECONDS)
