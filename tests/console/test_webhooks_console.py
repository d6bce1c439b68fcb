"""The console's Webhooks pages, in-process: an admin registers an endpoint (refused input shown
beside its field), sees its deliveries with status, latency and the answer, resends one, replays
since a time after a review, downloads the table as CSV; a finance user sees neither the section
nor the pages."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from app.webhook_sender import send_webhooks
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in
from tests.notifications.conftest import receiver
from tests.notifications.test_webhook_delivery import FAST, emit_events
from tests.notifications.webhook_receiver import Receiver

__all__ = ["receiver"]


async def test_an_admin_registers_an_endpoint_and_works_its_deliveries(
    client: httpx.AsyncClient, session: AsyncSession, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    await create_user(session, email="admin@example.com", role="admin", password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "admin@example.com", PASSWORD)
    page = await client.get("/console/webhooks")
    assert (
        page.status_code == 200 and "No webhook endpoints yet" in page.text and 'href="/console/webhooks"' in page.text
    )

    refused = await client.post(
        "/console/webhooks", data={"csrftoken": csrf_of(page.text), "url": "ftp://example.com", "event_types": "nope"}
    )
    assert refused.status_code == 422 and "use an http:// or https:// URL" in refused.text
    created = await client.post(
        "/console/webhooks",
        data={
            "csrftoken": csrf_of(page.text),
            "url": receiver.url(),
            "description": "CRM",
            "event_types": "customer.updated",
        },
    )
    assert created.status_code == 303
    endpoint_page = created.headers["location"].split("?")[0]

    await emit_events(sessions, 3, as_of=now())
    receiver.mode = "fail"
    await send_webhooks(sessions, FAST, as_of=now())
    shown = await client.get(endpoint_page)
    assert (
        shown.text.count('status-pending">pending') == 3 and "HTTP 500" in shown.text and "receiver down" in shown.text
    )
    assert re.search(r"\d+ ms</td>", shown.text) and "whsec_" in shown.text
    receiver.mode = "ok"
    await send_webhooks(sessions, FAST, as_of=now() + timedelta(minutes=1))
    shown = await client.get(endpoint_page)
    assert shown.text.count('status-delivered">delivered') == 3
    [resend, *_] = re.findall(r'action="(/console/webhooks/[^"]+/resend)"', shown.text)
    resent = await client.post(resend, data={"csrftoken": csrf_of(shown.text)})
    assert resent.status_code == 303 and "Queued+again" in resent.headers["location"]

    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    review = await client.post(f"{endpoint_page}/replay", data={"csrftoken": csrf_of(shown.text), "since": since})
    assert "<strong>3</strong> events would be queued again" in review.text
    statuses = (await session.execute(text("SELECT status FROM webhook_deliveries ORDER BY status"))).scalars().all()
    assert statuses == ["delivered", "delivered", "pending"]  # the review changed nothing
    replayed = await client.post(
        f"{endpoint_page}/replay", data={"csrftoken": csrf_of(shown.text), "since": since, "confirm": "yes"}
    )
    assert replayed.status_code == 303 and "3+events+queued+again" in replayed.headers["location"]
    bad = await client.post(
        f"{endpoint_page}/replay", data={"csrftoken": csrf_of(shown.text), "since": "2001-01-01T00:00"}
    )
    assert bad.status_code == 422 and "at most 30 days back" in bad.text

    exported = await client.get(f"{endpoint_page}/deliveries.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 3 and {row["event_type"] for row in rows} == {"customer.updated"}
    assert {row["status"] for row in rows} == {"pending"} and all(row["last_latency_ms"] for row in rows)
    listed = await client.get("/console/webhooks")
    assert receiver.url() in listed.text and "CRM" in listed.text

    token = {"csrftoken": csrf_of(listed.text)}
    garbage = await client.post(f"{endpoint_page}/rotate", data={**token, "overlap_hours": "9" * 40})
    assert garbage.status_code == 303 and "between+0+and+168+hours" in garbage.headers["location"]
    garbage = await client.post(f"{endpoint_page}/deliveries/nope/resend", data=token)
    assert "no+such+webhook+delivery" in garbage.headers["location"]
    missing = await client.get("/console/webhooks/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_a_finance_user_sees_no_webhooks(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await create_user(session, email="fin@example.com", role="finance", password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "fin@example.com", PASSWORD)
    customers = await client.get("/console/customers")
    assert 'href="/console/webhooks"' not in customers.text
    page = await client.get("/console/webhooks")
    assert page.status_code == 403 and "Only an admin" in page.text
    refused = await client.post(
        "/console/webhooks", data={"csrftoken": csrf_of(customers.text), "url": "https://x.example"}
    )
    assert refused.status_code == 403
    assert (await session.execute(text("SELECT count(*) FROM webhook_endpoints"))).scalar_one() == 0
