"""The Metering page's charts (lag percentiles by hour and watermark ages over time) and the
roller's backlog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import roll_up_usage, snapshot_metering
from tests.console.test_console import PASSWORD, sign_in, staff
from tests.metering.test_metering_history import send_late_usage

__all__ = ["staff"]


async def test_the_metering_page_charts_lags_and_watermark_ages(
    client: httpx.AsyncClient, session: AsyncSession, sessions: async_sessionmaker[AsyncSession], staff: None
) -> None:
    await send_late_usage(session)
    await sign_in(client, "cs@example.com", PASSWORD)
    before = (await client.get("/console/metering")).text
    assert "Watermark age, last 24 hours" in before and before.count("<polyline") == 3, "lags only, no snapshot yet"
    backlog = before.split("<h3>Roll-up</h3>")[1].split("</section>")[0]
    assert "<p>3</p>" in backlog and "oldest" in backlog, "three counted events wait for the roller"
    await roll_up_usage(sessions)
    await snapshot_metering(sessions, as_of=datetime.now(UTC))
    await snapshot_metering(sessions, as_of=datetime.now(UTC) + timedelta(minutes=5))
    page = (await client.get("/console/metering")).text
    assert "<p>0</p>" in page.split("<h3>Roll-up</h3>")[1].split("</section>")[0]
    assert page.count('class="line p50"') == 2 and page.count('class="line p99"') == 2
    assert "10.0 min" in page or "10.1 min" in page, "the watermark is about ten minutes behind"
