"""The Metering page's charts (lag percentiles by hour and watermark ages over time) and the
roller's backlog, and the event log's (edge mode) when it is not in use or cannot be reached."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import roll_up_usage, snapshot_metering
from app.main import create_app
from app.settings import Settings
from metering.log_backlog import READ_TIMEOUT_SECONDS
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


async def test_without_the_event_log_the_page_says_it_is_not_in_use(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = (await client.get("/console/metering")).text
    card = page.split("<h3>Event log</h3>")[1].split("</section>")[0]
    assert "log not in use" in card
    assert 'id="event-log-backlog"' not in page, "no partitions to chart"


async def test_an_unreachable_event_log_shows_on_the_page_within_the_read_timeout(
    settings: Settings, database_url: str, staff: None
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]
    edge = create_app(settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{nobody}"}), database_url)
    async with (
        edge.router.lifespan_context(edge),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://tally.test") as client,
    ):
        await sign_in(client, "cs@example.com", PASSWORD)
        started = time.monotonic()
        response = await client.get("/console/metering")
        took = time.monotonic() - started
        scrape = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert "log unreachable" in response.text.split("<h3>Event log</h3>")[1].split("</section>")[0]
    assert took < READ_TIMEOUT_SECONDS + 2, f"the page waited {took:.1f} s for the log"
    assert "tally_event_log_reachable 0.0" in scrape or "tally_event_log_reachable{" in scrape
    assert "tally_event_log_pending{" not in scrape
