"""The Reconciliation page without Stripe says collection is off, never that both sides agree."""

from __future__ import annotations

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in


async def test_without_stripe_the_page_says_collection_is_off(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await create_user(session, email="fin@example.com", role="finance", password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "fin@example.com", PASSWORD)
    page = (await client.get("/console/reconciliation")).text
    assert "Collection is off" in page and "nothing to reconcile" in page
    assert "agree" not in page and "Run now" not in page
    for status in ("open", "resolved", "all"):
        rows = await client.get("/console/reconciliation", params={"status": status}, headers={"HX-Request": "true"})
        assert "Collection is off: nothing is compared with Stripe." in rows.text and "agree" not in rows.text
