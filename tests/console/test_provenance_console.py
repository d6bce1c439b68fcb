"""The invoice-line view ("why this amount?"): linked from each line of the invoice page,
expanded in place by htmx, a page of its own without JavaScript, each sample event linked to
the trace that ingested it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from app.staff import create_user
from tests.billing.scenario import FEB_28, JAN_31, billing_catalog, invoices_of, subscribe
from tests.billing.test_provenance import send_region_calls
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in

__all__ = ["billing_catalog"]


async def test_each_invoice_line_explains_itself_in_place_and_on_its_own_page(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
) -> None:
    await create_user(session, email="ro@example.com", role="viewer", password=PASSWORD, as_of=now())
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_region_calls(session, "acme", "eu", 7, datetime(2026, 2, 10, 9, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    number = f"INV-{(await invoices_of(session, customer_id))[-1].number:06d}"
    await sign_in(client, "ro@example.com", PASSWORD)

    page = (await client.get(f"/console/invoices/{number}")).text
    links = re.findall(r'<a class="why-link" href="([^"]+)" hx-get="\1" hx-target="#why-(\d+)"', page)
    assert [url for url, _ in links] == [f"/console/invoices/{number}/lines/0", f"/console/invoices/{number}/lines/1"]
    assert all(f'<td colspan="4" id="why-{position}"></td>' in page for _, position in links)

    fragment = await client.get(links[0][0], headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "HX-Request" in fragment.headers["Vary"]
    assert 'class="provenance" id="provenance-0"' in fragment.text
    assert "This line billed the <strong>7</strong> event(s)" in fragment.text
    assert "<code>region=eu</code>" in fragment.text
    trace = "eu".ljust(32, "a")
    assert fragment.text.count(f'<a href="/console/traces/{trace}">') == 5, "five sample events, each to its trace"
    assert "acme-eu-2026-02-10T09:00:00+00:00-0" in fragment.text

    full = await client.get(links[0][0])
    assert "<html" in full.text and "API calls (region=eu)" in full.text and "Why this amount?" in full.text
    base_fee = (await client.get(links[1][0], headers={"HX-Request": "true"})).text
    assert "Priced on <strong>Basic v1</strong>" in base_fee and "1.0000 of the billing period" in base_fee
    assert (await client.get(f"/console/invoices/{number}/lines/9")).status_code == 404
