"""The email outbox through GraphQL and the CLI: a failed email is visible with its error, a
resend sends it again; hostile input on every field and concurrent resends."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.email import send_emails
from app.settings import Settings
from tests.app.test_cli import run
from tests.billing.scenario import JAN_31, subscribe
from tests.conftest import graphql, now
from tests.notifications.conftest import SmtpFixture, free_port
from tests.notifications.test_email_delivery import OPENED, customer_with_details

__all__ = ["run"]

MESSAGES = """query($c: ID, $s: EmailStatus, $first: Int, $after: String) {
  emailMessages(customerId: $c, status: $s, first: $first, after: $after) {
    edges { cursor node { id messageKey kind recipients locale subject invoiceId status attempts nextAttemptAt
                          lastError smtpMessageId resendOfId sentAt } }
    pageInfo { hasNextPage endCursor } } }"""
RESEND = """mutation($i: ResendEmailInput!) { resendEmail(input: $i) {
  message { id messageKey status recipients resendOfId } userErrors { field code message } } }"""


async def failed_email(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, smtp: SmtpFixture
) -> uuid.UUID:
    """A customer whose invoice email failed: the server was down and one try was all it had."""
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"], locale="de")
    await run_billing(sessions, settings, as_of=OPENED)
    up = smtp.delivery(max_attempts=1)
    await send_emails(sessions, replace(up, server=replace(up.server, port=free_port())), as_of=OPENED)
    return customer_id


async def test_a_failed_email_is_visible_with_its_error_and_a_resend_sends_it(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await failed_email(session, sessions, settings, smtp)
    viewer = await token_for("viewer")
    found = (await graphql(client, viewer, MESSAGES, {"c": str(customer_id), "s": "FAILED"})).json()
    [edge] = found["data"]["emailMessages"]["edges"]
    message = edge["node"]
    assert (message["kind"], message["status"], message["attempts"], message["locale"]) == (
        "INVOICE_ISSUED",
        "FAILED",
        1,
        "de",
    )
    assert message["subject"].startswith("Rechnung 1: 10,00")
    assert "SMTPConnect" in message["lastError"]
    assert message["nextAttemptAt"] is None and message["sentAt"] is None and message["invoiceId"]
    everyone_failed = (await graphql(client, viewer, MESSAGES, {"s": "FAILED"})).json()["data"]["emailMessages"]
    assert [e["node"]["id"] for e in everyone_failed["edges"]] == [message["id"]]

    refused = (await graphql(client, viewer, RESEND, {"i": {"id": message["id"]}})).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    support = await token_for("support")
    resent = (await graphql(client, support, RESEND, {"i": {"id": message["id"]}})).json()["data"]["resendEmail"]
    assert resent["userErrors"] == []
    assert resent["message"]["messageKey"] == message["messageKey"] + ":resend:1"
    assert (resent["message"]["status"], resent["message"]["resendOfId"]) == ("PENDING", message["id"])
    await send_emails(sessions, smtp.delivery(), as_of=now())  # the resend was queued now
    [received] = smtp.mailbox.received
    assert received.recipients == ["ap@acme.example"]
    listed = (await graphql(client, viewer, MESSAGES, {"c": str(customer_id)})).json()["data"]["emailMessages"]
    assert [e["node"]["status"] for e in listed["edges"]] == ["SENT", "FAILED"]  # newest first, history kept


async def test_hostile_input_on_email_messages_and_resend(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await failed_email(session, sessions, settings, smtp)
    admin = await token_for("admin")

    async def listing(variables: dict) -> dict:
        return (await graphql(client, admin, MESSAGES, variables)).json()

    for customer in ("not-a-uuid", "x" * 20_000, "'; DROP TABLE email_messages; --", str(uuid.uuid4()), "\x00"):
        assert (await listing({"c": customer}))["data"]["emailMessages"]["edges"] == [], customer
    for status in ("BOGUS", "failed", 7, "FAILED" * 10_000):
        assert "errors" in await listing({"s": status}), status
    for first in (0, -1, 10**9):
        assert "first" in (await listing({"first": first}))["errors"][0]["message"], first
    for after in ("garbage", "W10=", "x" * 5000):
        assert "after" in (await listing({"after": after}))["errors"][0]["message"], after

    customer_token = await token_for("customer", "acme")
    forbidden = (await graphql(client, customer_token, MESSAGES, {"c": str(customer_id)})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    for bad_id in ("nope", "x" * 20_000, str(uuid.uuid4()), "\x00", ""):
        answer = (await graphql(client, admin, RESEND, {"i": {"id": bad_id}})).json()["data"]["resendEmail"]
        assert answer["message"] is None
        assert answer["userErrors"] == [{"field": ["id"], "code": "NOT_FOUND", "message": "no such email"}]
    assert "errors" in (await graphql(client, admin, RESEND, {"i": {}})).json()
    count = (await session.execute(text("SELECT count(*) FROM email_messages"))).scalar_one()
    assert count == 1  # nothing written by any of it


async def test_sixteen_concurrent_resends_queue_one_message(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await failed_email(session, sessions, settings, smtp)
    admin = await token_for("admin")
    [original] = (
        await session.execute(text("SELECT id FROM email_messages WHERE customer_id = :id"), {"id": customer_id})
    ).all()

    answers = await asyncio.gather(
        *(graphql(client, admin, RESEND, {"i": {"id": str(original[0])}}) for _ in range(16))
    )

    ids = {answer.json()["data"]["resendEmail"]["message"]["id"] for answer in answers}
    assert len(ids) == 1
    keys = (await session.execute(text("SELECT message_key FROM email_messages ORDER BY created_at"))).scalars().all()
    assert len(keys) == 2 and keys[1].endswith(":resend:1")


@pytest.fixture
async def queued(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> uuid.UUID:
    """A French customer's invoice email waiting, and a skipped one of a customer without email."""
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"], locale="fr")
    await subscribe(session, "silent", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(seconds=1))
    return customer_id


def test_the_cli_lists_the_outbox_and_send_says_when_email_is_off(run, queued: uuid.UUID) -> None:
    for command in (["email"], ["email", "send"], ["email", "list"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command

    listed = run("email", "list", "--customer", "acme", "--json")
    assert listed.exit_code == 0, listed.output
    [document] = json.loads(listed.output)
    assert (document["customerId"], document["status"], document["recipients"], document["locale"]) == (
        str(queued),
        "pending",
        ["ap@acme.example"],
        "fr",
    )
    skipped = run("email", "list", "--status", "skipped")
    assert "skipped" in skipped.output and "(the customer has no invoice email)" in skipped.output
    assert run("email", "list", "--status", "bogus").exit_code == 1
    assert run("email", "list", "--customer", "nobody").exit_code == 1
    off = run("email", "send")
    assert off.exit_code == 2 and "email is off" in off.output
