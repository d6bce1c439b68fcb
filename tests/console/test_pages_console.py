"""The overview, invoices list, plans page and ledger view in-process, and every console page
rendering on an empty database and on the demo's."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

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


async def test_invoices_list_filters_totals_and_csv(client: httpx.AsyncClient, demo: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get("/console/invoices")
    assert page.status_code == 200, page.text
    numbers = re.findall(r'href="/console/invoices/(INV-\d+)"', page.text)
    assert numbers and numbers == sorted(numbers, reverse=True), "every number links to its invoice, newest first"
    acme = await client.get("/console/invoices", params={"customer": "acme", "status": "issued"})
    assert "Acme" in acme.text and "Globex" not in acme.text
    exported = await client.get("/console/invoices.csv", params={"customer": "acme", "status": "issued"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and all(row["status"] == "ISSUED" and "acme" in row["customer_external_id"] for row in rows)
    total = sum(Decimal(row["total"]) for row in rows)
    assert f"{total:,}" in acme.text, "the totals are those of every matching invoice"
    refused = await client.get("/console/invoices", params={"min_total": "ten", "issued_from": "yesterday"})
    assert refused.status_code == 422
    assert "give an amount" in refused.text and "give a date" in refused.text
    found = await client.get("/console/invoices", params={"number": numbers[0].lower()})
    assert found.status_code == 303 and found.headers["location"] == f"/console/invoices/{numbers[0]}"
