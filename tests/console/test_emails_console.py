"""The console's Emails tab and Emails page, in-process: a failed invoice email with its error,
resent with one click (once, however often submitted), what a viewer may not do, and garbage
in the resend form."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from app.staff import create_user
from tests.billing.scenario import billing_catalog
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in
from tests.notifications.conftest import SmtpFixture, smtp
from tests.notifications.test_email_api import failed_email

__all__ = ["billing_catalog", "smtp"]


@pytest.fixture
async def failed(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> uuid.UUID:
    for email, role in (("cs@example.com", "support"), ("view@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    await session.commit()
    return await failed_email(session, sessions, settings, smtp)


async def test_a_failed_email_is_shown_and_resent_once(
    client: httpx.AsyncClient, session: AsyncSession, failed: uuid.UUID
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    tab = await client.get(f"/console/customers/{failed}/emails")
    assert tab.status_code == 200
    assert "Rechnung 1: 10,00" in tab.text and "ap@acme.example" in tab.text
    assert re.search(r'status-failed">failed', tab.text)
    assert "SMTPConnect" in tab.text
    [form_action] = re.findall(r'action="(/console/emails/[^"]+/resend)"', tab.text)

    for _ in range(2):  # a double submission
        resent = await client.post(form_action, data={"csrftoken": csrf_of(tab.text), "customer_id": str(failed)})
        assert resent.status_code == 303
        assert resent.headers["location"].startswith(f"/console/customers/{failed}/emails?notice=")
    after = await client.get(resent.headers["location"])
    assert "The email is queued again" in after.text
    assert re.search(r'status-pending">pending', after.text) and "a resend" in after.text
    count = (await session.execute(text("SELECT count(*) FROM email_messages"))).scalar_one()
    assert count == 2

    everyone = await client.get("/console/emails")  # failed ones by default
    assert everyone.status_code == 200 and "Emails" in everyone.text
    assert "acme" in everyone.text and "SMTPConnect" in everyone.text
    pending = await client.get("/console/emails", params={"status": "pending"})
    assert "a resend" in pending.text and "SMTPConnect" not in pending.text
    assert (await client.get("/console/emails", params={"status": "<script>"})).status_code == 200


async def test_garbage_in_the_resend_form_and_a_viewer(client: httpx.AsyncClient, failed: uuid.UUID) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/emails")
    token = csrf_of(page.text)
    for message_id, customer_id in (
        ("not-a-uuid", "https://evil.example/"),
        (str(uuid.uuid4()), "//evil.example"),
        ("x" * 5000, str(failed)),
    ):
        answer = await client.post(
            f"/console/emails/{message_id}/resend", data={"csrftoken": token, "customer_id": customer_id}
        )
        assert answer.status_code in (303, 404), answer.status_code
        if answer.status_code == 303:
            location = answer.headers["location"]
            assert location.startswith("/console/") and "error=no+such+email" in location

    await client.post("/console/logout", data={"csrftoken": token})
    client.cookies.clear()
    await sign_in(client, "view@example.com", PASSWORD)
    tab = await client.get(f"/console/customers/{failed}/emails")
    assert tab.status_code == 200 and "SMTPConnect" in tab.text
    assert "/resend" not in tab.text  # no button
    [message_id] = re.findall(r'id="email-([0-9a-f-]+)"', tab.text)
    refused = await client.post(f"/console/emails/{message_id}/resend", data={"csrftoken": csrf_of(tab.text)})
    assert refused.status_code == 303 and "error=Your+role+may+not+resend+emails" in refused.headers["location"]
