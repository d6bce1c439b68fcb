"""The overview, invoices list, plans page and ledger view in-process, and every console page
rendering on an empty database and on the demo's."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.demo import load_demo
from app.staff import create_user
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in


@pytest.fixture
async def admin(session: AsyncSession) -> None:
    await create_user(session, email="fin@example.com", role="admin", password=PASSWORD, as_of=now())
    await session.commit()


@pytest.fixture
async def demo(session: AsyncSession, admin: None) -> None:
    await load_demo(session, as_of=now(), with_usage=True)
    await session.commit()


async def test_the_overview_is_the_landing_page(client: httpx.AsyncClient, demo: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    assert (await client.get("/console")).headers["location"] == "/console/overview"
    page = await client.get("/console/overview")
    assert page.status_code == 200, page.text
    assert 'href="/console/overview"' in page.text
    for heading in (
        "Monthly recurring revenue",
        "Revenue by month",
        "Receivables",
        "Credits outstanding",
        "Usage trend",
    ):
        assert heading in page.text
