"""Webhook endpoints through GraphQL (admin only): register with a dry run first, see deliveries
with their attempts, resend and replay, rotate; hostile input on every mutation is refused with a
code naming the field and writes nothing; racing creates with one idempotency key make one."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.webhook_sender import send_webhooks
from notifications import webhook_endpoints as endpoints
from tests.conftest import graphql, now
from tests.notifications.test_webhook_delivery import FAST, emit_events
from tests.notifications.webhook_receiver import Receiver

FIELDS = "id url description eventTypes enabled disabledReason secret previousSecretUntil consecutiveFailures"
CREATE = f"""mutation($i: CreateWebhookEndpointInput!) {{ createWebhookEndpoint(input: $i) {{
  endpoint {{ {FIELDS} }} dryRun userErrors {{ field code message }} }} }}"""
UPDATE = f"""mutation($i: UpdateWebhookEndpointInput!) {{ updateWebhookEndpoint(input: $i) {{
  endpoint {{ {FIELDS} }} dryRun userErrors {{ field code message }} }} }}"""
ROTATE = f"""mutation($i: RotateWebhookSecretInput!) {{ rotateWebhookEndpointSecret(input: $i) {{
  endpoint {{ {FIELDS} }} userErrors {{ field code message }} }} }}"""
DISABLE = f"""mutation($i: WebhookEndpointIdInput!) {{ disableWebhookEndpoint(input: $i) {{
  endpoint {{ {FIELDS} }} userErrors {{ field code message }} }} }}"""
ENABLE = DISABLE.replace("disableWebhookEndpoint", "enableWebhookEndpoint")
DELETE = """mutation($i: WebhookEndpointIdInput!) { deleteWebhookEndpoint(input: $i) {
  deletedId userErrors { field code message } } }"""
RESEND = """mutation($i: ResendWebhookDeliveryInput!) { resendWebhookDelivery(input: $i) {
  delivery { id status attempts } userErrors { field code message } } }"""
REPLAY = """mutation($i: ReplayWebhookEventsInput!) { replayWebhookEvents(input: $i) {
  events dryRun userErrors { field code message } } }"""
ENDPOINT = """query($id: ID!) { webhookEndpoint(id: $id) { id enabled deliveryCounts { pending delivered failed }
  deliveries(first: 10) { edges { node { id eventId eventType resourceVersion status attempts lastResponseStatus
    lastLatencyMs lastResponseExcerpt attemptHistory { responseStatus latencyMs error } } } } } }"""
ENDPOINTS = "{ webhookEndpoints { id url } webhookEventTypes { type description } }"


async def call(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = (await graphql(client, token, query, variables)).json()
    assert "errors" not in answer, answer
    return dict(next(iter(answer["data"].values())))


async def endpoint_count(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM webhook_endpoints"))).scalar_one())


async def test_an_admin_registers_an_endpoint_and_sees_its_deliveries_resends_and_replays(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    admin = await token_for("admin")
    variables = {"url": receiver.url(), "eventTypes": ["customer.updated"], "description": "CRM sync"}
    checked = await call(client, admin, CREATE, {"i": {**variables, "dryRun": True}})
    assert checked["dryRun"] and checked["userErrors"] == [] and await endpoint_count(session) == 0
    created = (await call(client, admin, CREATE, {"i": variables}))["endpoint"]
    assert created["enabled"] and created["eventTypes"] == ["customer.updated"]
    assert created["secret"].startswith("whsec_") and 24 <= len(created["secret"].removeprefix("whsec_")) * 3 // 4 <= 32

    await emit_events(sessions, 2, as_of=now())
    await send_webhooks(sessions, FAST, as_of=now())
    seen = (await graphql(client, admin, ENDPOINT, {"id": created["id"]})).json()["data"]["webhookEndpoint"]
    assert seen["deliveryCounts"] == {"pending": 0, "delivered": 2, "failed": 0}
    rows = [edge["node"] for edge in seen["deliveries"]["edges"]]
    assert {row["status"] for row in rows} == {"DELIVERED"} and rows[0]["lastResponseStatus"] == 200
    assert rows[0]["lastResponseExcerpt"] == '{"ok":true}' and rows[0]["attemptHistory"][0]["latencyMs"] >= 0

    resent = await call(client, admin, RESEND, {"i": {"id": rows[0]["id"]}})
    assert resent["delivery"]["status"] == "PENDING" and resent["userErrors"] == []
    await send_webhooks(sessions, FAST, as_of=now())
    assert [one.headers["webhook-id"] for one in receiver.requests()].count(rows[0]["eventId"]) == 2

    since = (now() - timedelta(hours=1)).isoformat()
    counted = await call(client, admin, REPLAY, {"i": {"endpointId": created["id"], "since": since, "dryRun": True}})
    assert (counted["events"], counted["dryRun"]) == (2, True)
    await call(client, admin, REPLAY, {"i": {"endpointId": created["id"], "since": since}})
    await send_webhooks(sessions, FAST, as_of=now())
    assert len(receiver.requests()) == 5

    rotated = (await call(client, admin, ROTATE, {"i": {"id": created["id"], "overlapHours": 2}}))["endpoint"]
    assert rotated["secret"] != created["secret"] and rotated["previousSecretUntil"]
    retried = await call(client, admin, ROTATE, {"i": {"id": created["id"], "overlapHours": 2}})
    assert retried["userErrors"][0]["code"] == "ROTATION_IN_PROGRESS"  # the receiver's secret still signs
    leaked = (await call(client, admin, ROTATE, {"i": {"id": created["id"], "overlapHours": 0}}))["endpoint"]
    assert leaked["secret"] not in (rotated["secret"], created["secret"]) and leaked["previousSecretUntil"] is None
    disabled = (await call(client, admin, DISABLE, {"i": {"id": created["id"]}}))["endpoint"]
    assert not disabled["enabled"] and disabled["disabledReason"].startswith("disabled by")
    assert (await call(client, admin, ENABLE, {"i": {"id": created["id"]}}))["endpoint"]["enabled"]

    listed = (await graphql(client, admin, ENDPOINTS)).json()["data"]
    assert [row["url"] for row in listed["webhookEndpoints"]] == [receiver.url()]
    assert "invoice.paid" in {row["type"] for row in listed["webhookEventTypes"]}
    assert (await call(client, admin, DELETE, {"i": {"id": created["id"]}}))["deletedId"] == created["id"]
    assert await endpoint_count(session) == 0


async def test_only_an_admin_may_see_or_change_webhooks(client: httpx.AsyncClient, token_for) -> None:
    for role in ("finance", "support", "viewer"):
        token = await token_for(role)
        for query, variables in ((ENDPOINTS, {}), (CREATE, {"i": {"url": "https://example.com/hooks"}})):
            answer = (await graphql(client, token, query, variables)).json()
            assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN", (role, answer)


async def test_hostile_input_is_refused_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = await token_for("admin")
    refused = {
        "TOO_LONG": {"url": "https://example.com/" + "a" * 3000},
        "UNSUPPORTED_SCHEME": {"url": "ftp://example.com/hooks"},
        "INVALID": {"url": "https://"},
        "UNKNOWN_EVENT_TYPE": {"url": "https://example.com", "eventTypes": ["invoice.paid", "invoice.exploded"]},
        "TOO_MANY": {"url": "https://example.com", "eventTypes": ["invoice.paid"] * 10_000},
    }
    for code, variables in refused.items():
        answer = await call(client, admin, CREATE, {"i": variables})
        assert answer["endpoint"] is None and answer["userErrors"][0]["code"] == code, (code, answer)
        assert answer["userErrors"][0]["field"] in (["url"], ["eventTypes"])
    for url in ("javascript:alert(1)", "http://exa mple.com", "https://example.com:0/", "http://[::1"):
        answer = await call(client, admin, CREATE, {"i": {"url": url}})
        assert answer["userErrors"][0]["field"] == ["url"], (url, answer)
    answer = await call(client, admin, CREATE, {"i": {"url": "https://example.com", "description": "x" * 501}})
    assert answer["userErrors"][0]["field"] == ["description"]
    answer = await call(client, admin, CREATE, {"i": {"url": "https://example.com", "eventTypes": []}})
    assert answer["userErrors"][0]["field"] == ["eventTypes"]
    assert await endpoint_count(session) == 0

    created = (await call(client, admin, CREATE, {"i": {"url": "https://example.com/hooks"}}))["endpoint"]
    for overlap in (-1, 169, 2_000_000_000):
        answer = await call(client, admin, ROTATE, {"i": {"id": created["id"], "overlapHours": overlap}})
        assert answer["userErrors"][0] == {
            "field": ["overlapHours"],
            "code": "OUT_OF_RANGE",
            "message": "between 0 and 168 hours",
        }
    answer = await call(client, admin, UPDATE, {"i": {"id": created["id"], "url": "gopher://x", "description": "new"}})
    assert answer["userErrors"][0]["field"] == ["url"]
    answer = await call(client, admin, UPDATE, {"i": {"id": created["id"], "eventTypes": ["nope"], "dryRun": True}})
    assert answer["userErrors"][0]["code"] == "UNKNOWN_EVENT_TYPE"
    for since in ("2000-01-01T00:00:00Z", (now() + timedelta(days=1)).isoformat(), "2026-01-01T00:00:00"):
        answer = await call(client, admin, REPLAY, {"i": {"endpointId": created["id"], "since": since}})
        assert answer["userErrors"][0]["field"] == ["since"], (since, answer)
    for query, name in ((DISABLE, "id"), (RESEND, "id"), (DELETE, "id")):
        for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
            answer = await call(client, admin, query, {"i": {"id": bad}})
            assert answer["userErrors"][0]["code"] == "NOT_FOUND" and answer["userErrors"][0]["field"] == [name]
    # Absurd counts: more endpoints than the limit, a replay of more events than a replay may queue.
    monkeypatch.setattr(endpoints, "MAX_ENDPOINTS", 1)
    answer = await call(client, admin, CREATE, {"i": {"url": "https://example.com/second"}})
    assert answer["userErrors"][0]["code"] == "LIMIT_EXCEEDED" and answer["userErrors"][0]["field"] == ["url"]
    monkeypatch.setattr(endpoints, "REPLAY_LIMIT", 2)
    await emit_events(sessions, 3, as_of=now() - timedelta(minutes=5))
    since = (now() - timedelta(hours=1)).isoformat()
    answer = await call(client, admin, REPLAY, {"i": {"endpointId": created["id"], "since": since}})
    assert (
        answer["userErrors"][0]["code"] == "LIMIT_EXCEEDED" and "3 events match" in answer["userErrors"][0]["message"]
    )
    assert (await session.execute(text("SELECT count(*) FROM webhook_deliveries"))).scalar_one() == 0
    still = (await session.execute(text("SELECT url, description, secret FROM webhook_endpoints"))).one()
    assert (still[0], still[1], still[2]) == ("https://example.com/hooks", "", created["secret"])


async def test_racing_creates_with_one_idempotency_key_make_one_endpoint(
    client: httpx.AsyncClient, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    variables = {"url": "https://example.com/hooks", "idempotencyKey": "setup-1"}
    answers = await asyncio.gather(*(call(client, admin, CREATE, {"i": variables}) for _ in range(8)))
    assert len({answer["endpoint"]["id"] for answer in answers}) == 1 and await endpoint_count(session) == 1
    other = await call(client, admin, CREATE, {"i": {**variables, "url": "https://example.com/other"}})
    assert other["userErrors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    answer = await call(client, admin, CREATE, {"i": {"url": "https://example.com", "idempotencyKey": "k" * 201}})
    assert answer["userErrors"][0]["field"] == ["idempotencyKey"]
