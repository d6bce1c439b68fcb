"""Replaying the quarantine leaves the figures right: an event still waiting is not rejected
again (Metering overview, /metrics), and what a replay counts waits for the roller from the
replay, not from its first arrival. A replay's limit is the domain's rule, the same from GraphQL and
the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.app.test_cli import run
from tests.app.test_metrics import parse, value
from tests.conftest import graphql
from tests.metering.test_ingestion_api import request_event, send

__all__ = ["run"]

OVERVIEW = "{ meteringOverview { rejectedByCode { code count } quarantined waitingToRollUp rollUpLagMs } }"
REPLAY = "mutation { replayQuarantine(input: {}) { accepted stillWaiting rejected } }"
CREATE = "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code } } }"


async def data(client: httpx.AsyncClient, token: str, query: str, variables: dict | None = None) -> dict[str, Any]:
    body = (await graphql(client, token, query, variables)).json()
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


async def rejected_metric(client: httpx.AsyncClient) -> float:
    scraped = parse((await client.get("/metrics")).text)
    return value(scraped, "tally_metering_events_total", outcome="rejected", code="UNKNOWN_CUSTOMER")


async def test_replays_count_nothing_twice_and_the_backlog_ages_from_the_replay(
    client: httpx.AsyncClient, catalog: None, session: AsyncSession, token_for
) -> None:
    admin, ingest = await token_for("admin"), await token_for("ingest")
    metric_before = await rejected_metric(client)
    happened = (datetime.now(UTC) - timedelta(minutes=40)).isoformat()
    events = [{**request_event(f"late-{i}", customer="org_late"), "timestamp": happened} for i in (1, 2)]
    assert (await send(client, ingest, events)).status_code == 200
    arrived = await data(client, admin, OVERVIEW)
    assert arrived["meteringOverview"]["rejectedByCode"] == [{"code": "UNKNOWN_CUSTOMER", "count": 2}]
    assert await rejected_metric(client) == metric_before + 2

    for _ in range(3):
        replayed = await data(client, admin, REPLAY)
        assert replayed["replayQuarantine"] == {"accepted": 0, "stillWaiting": 2, "rejected": 0}
    overview = (await data(client, admin, OVERVIEW))["meteringOverview"]
    assert overview["rejectedByCode"] == [{"code": "UNKNOWN_CUSTOMER", "count": 2}], "not 8 after three replays"
    assert overview["quarantined"] == 2
    assert await rejected_metric(client) == metric_before + 2

    # The events arrived half an hour ago; the customer is created now and the quarantine replayed.
    await session.execute(text("UPDATE quarantined_events SET received_at = received_at - interval '30 minutes'"))
    await session.commit()
    started = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    new_customer = {"externalId": "org_late", "name": "Late", "currency": "USD", "planKey": "hobby"}
    await data(client, admin, CREATE, {"i": {**new_customer, "startedAt": started}})
    replayed = await data(client, admin, REPLAY)
    assert replayed["replayQuarantine"] == {"accepted": 2, "stillWaiting": 0, "rejected": 0}
    overview = (await data(client, admin, OVERVIEW))["meteringOverview"]
    assert overview["waitingToRollUp"] == 2 and overview["quarantined"] == 0
    assert Decimal(overview["rollUpLagMs"]) < 60_000, "waiting since the replay, not since the first arrival"
    assert overview["rejectedByCode"] == [{"code": "UNKNOWN_CUSTOMER", "count": 2}]


async def test_graphql_and_the_cli_refuse_the_same_replay_limits_and_replay_nothing(
    client: httpx.AsyncClient, catalog: None, session: AsyncSession, token_for, run
) -> None:
    """A replay of 0 or of more than 100,000 events is refused by the metering domain, alike from
    GraphQL (a userError on ``limit``) and from `tally events replay --limit` (exit 1, ``limit``
    named), though the waiting events could be replayed."""
    admin, ingest = await token_for("admin"), await token_for("ingest")
    events = [request_event(f"early-{i}", customer="org_early") for i in (1, 2)]
    assert (await send(client, ingest, events)).status_code == 200
    early_customer = {"externalId": "org_early", "name": "Early", "currency": "USD", "planKey": "hobby"}
    started = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await data(client, admin, CREATE, {"i": {**early_customer, "startedAt": started}})
    replay = (
        "mutation($limit: Int!) { replayQuarantine(input: {limit: $limit}) "
        "{ accepted userErrors { field code message } } }"
    )
    for limit in (0, 100_001):
        refused = (await data(client, admin, replay, {"limit": limit}))["replayQuarantine"]
        assert refused == {
            "accepted": 0,
            "userErrors": [{"field": ["limit"], "code": "INVALID", "message": "must be between 1 and 100000"}],
        }
        # The CLI runs its own event loop: in a thread, beside the test's.
        result = await asyncio.to_thread(run, "events", "replay", "--limit", str(limit))
        assert result.exit_code == 1
        assert "limit: must be between 1 and 100000" in " ".join(result.output.split())
    waiting = "SELECT count(*) FROM quarantined_events WHERE replayed_at IS NULL"
    assert (await session.execute(text(waiting))).scalar_one() == 2, "nothing replayed"
    replayed = await asyncio.to_thread(run, "events", "replay", "--limit", "1", "--json")
    assert replayed.exit_code == 0 and json.loads(replayed.stdout)["accepted"] == 1
