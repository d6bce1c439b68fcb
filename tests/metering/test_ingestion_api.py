"""POST /v1/events and the usage it feeds, over HTTP in-process against the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.main import create_app
from app.settings import Settings
from app.usage_ingest import ingest_limits
from metering.service import replay_quarantine, roll_up
from tests.conftest import SentStatements, graphql


def ts(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) - timedelta(minutes=1) + delta).isoformat()


def request_event(event_id: str, customer: str = "org_hobby", model: str = "fast-1", **extra: object) -> dict:
    return {
        "id": event_id,
        "customer": customer,
        "type": "request.completed",
        "timestamp": ts(),
        "properties": {"model": model, **extra},
    }


@pytest.fixture
async def customers_on_plans(client: httpx.AsyncClient, catalog: None, token_for) -> str:
    admin = await token_for("admin")
    for external_id, plan in (("org_hobby", "hobby"), ("org_pro", "pro"), ("org_team", "team")):
        response = await graphql(
            client,
            admin,
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code } } }",
            {
                "i": {
                    "externalId": external_id,
                    "name": external_id,
                    "currency": "USD",
                    "planKey": plan,
                    "startedAt": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
                }
            },
        )
        assert response.json()["data"]["createCustomer"]["userErrors"] == []
    return await token_for("ingest")


async def send(client: httpx.AsyncClient, token: str, events: list[dict]) -> httpx.Response:
    return await client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {token}"})


async def test_a_batch_counts_new_events_once_and_keeps_valid_ones(
    client: httpx.AsyncClient, customers_on_plans: str
) -> None:
    token = customers_on_plans
    batch = [request_event("r1"), request_event("r2", model="large-1"), request_event("r3", customer="")]
    first = await send(client, token, batch)
    assert first.status_code == 200
    assert first.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [{"index": 2, "code": "INVALID_EVENT", "message": "customer must be a non-empty string"}],
    }
    retried = await send(client, token, batch)
    assert retried.json()["accepted"] == 0 and retried.json()["duplicates"] == 2
    changed_payload = await send(client, token, [request_event("r1", model="other")])
    assert changed_payload.json()["duplicates"] == 1, "an id Tally has is counted once, whatever its payload"


async def test_ndjson_body(client: httpx.AsyncClient, customers_on_plans: str) -> None:
    import json

    body = "\n".join(json.dumps(request_event(f"n{i}")) for i in range(3)) + "\n"
    response = await client.post(
        "/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {customers_on_plans}", "Content-Type": "application/x-ndjson"},
    )
    assert response.json()["accepted"] == 3


async def test_bad_requests(client: httpx.AsyncClient, customers_on_plans: str, token_for) -> None:
    token = customers_on_plans
    not_json = await client.post("/v1/events", content=b"{oops", headers={"Authorization": f"Bearer {token}"})
    assert (not_json.status_code, not_json.json()["code"]) == (400, "INVALID_BODY")
    assert (await client.post("/v1/events", json=[])).status_code == 401
    viewer = await token_for("viewer")
    forbidden = await send(client, viewer, [request_event("v1")])
    assert forbidden.status_code == 403


@pytest.fixture
async def small_limits_client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        env="test",
        tracing=False,
        secret_key="s" * 32,
        events_max_body_bytes=2048,
        events_max_per_request=3,
    )
    application: FastAPI = create_app(settings, database_url)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
    ):
        yield http


async def test_limits_answer_413(small_limits_client: httpx.AsyncClient, customers_on_plans: str) -> None:
    headers = {"Authorization": f"Bearer {customers_on_plans}"}
    too_many = await small_limits_client.post(
        "/v1/events", json=[request_event(f"m{i}") for i in range(4)], headers=headers
    )
    assert (too_many.status_code, too_many.json()["code"]) == (413, "TOO_MANY_EVENTS")
    too_big = await small_limits_client.post(
        "/v1/events", json=[request_event("big", note="x" * 3000)], headers=headers
    )
    assert (too_big.status_code, too_big.json()["code"]) == (413, "BODY_TOO_LARGE")


INGEST_USAGE = """mutation($events: [UsageEventInput!]!) {
  ingestUsage(events: $events) { accepted duplicates rejected { index code message } userErrors { field code message } }
}"""


async def test_ingest_usage_obeys_the_same_limits(
    small_limits_client: httpx.AsyncClient, customers_on_plans: str, session: AsyncSession
) -> None:
    async def ingest_usage(events: list[dict]) -> dict:
        response = await graphql(small_limits_client, customers_on_plans, INGEST_USAGE, {"events": events})
        assert response.status_code == 200, response.text
        return response.json()["data"]["ingestUsage"]

    too_many = await ingest_usage([request_event(f"gm{i}") for i in range(4)])
    assert too_many["accepted"] == 0 and too_many["rejected"] == []
    assert [(e["field"], e["code"]) for e in too_many["userErrors"]] == [(["events"], "TOO_MANY_EVENTS")]
    too_big = await ingest_usage([request_event("gbig", note="x" * 3000)])
    assert [(e["field"], e["code"]) for e in too_big["userErrors"]] == [(["events"], "BODY_TOO_LARGE")]
    stored = await session.execute(text("SELECT count(*) FROM events WHERE event_id LIKE 'g%'"))
    assert stored.scalar_one() == 0, "a refused batch stores nothing"
    within = await ingest_usage([request_event(f"gok{i}", note="x" * 500) for i in range(3)])
    assert (within["accepted"], within["userErrors"]) == (3, [])


async def test_quarantine_and_replay(
    client: httpx.AsyncClient, customers_on_plans: str, session: AsyncSession, token_for, settings: Settings
) -> None:
    response = await send(
        client,
        customers_on_plans,
        [request_event("q1", customer="org_later"), request_event("q2", customer="org_later")],
    )
    assert [r["code"] for r in response.json()["rejected"]] == ["UNKNOWN_CUSTOMER", "UNKNOWN_CUSTOMER"]
    await send(client, customers_on_plans, [request_event("q1", customer="org_later")])
    held = (await session.execute(text("SELECT count(*) FROM quarantined_events"))).scalar_one()
    assert held == 2, "a retried quarantined event is kept once"
    report = await replay_quarantine(session, limits=ingest_limits(settings))
    await session.commit()
    assert (report.accepted, report.still_waiting) == (0, 2), "still no such customer"
    admin = await token_for("admin")
    await graphql(
        client,
        admin,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code } } }",
        {
            "i": {
                "externalId": "org_later",
                "name": "Later",
                "currency": "USD",
                "planKey": "hobby",
                "startedAt": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            }
        },
    )
    report = await replay_quarantine(session, limits=ingest_limits(settings))
    await session.commit()
    assert (report.accepted, report.still_waiting) == (2, 0)
    entitlement = await client.get(
        "/v1/customers/org_later/entitlements/requests", headers={"Authorization": f"Bearer {admin}"}
    )
    assert entitlement.json()["used"] == "2"


async def test_entitlement_below_at_and_past_the_limit(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    headers = {"Authorization": f"Bearer {await token_for('viewer')}"}
    refused = await client.get(
        "/v1/customers/org_hobby/entitlements/requests", headers={"Authorization": f"Bearer {customers_on_plans}"}
    )
    assert refused.status_code == 403, "an ingest token only sends usage"

    async def entitlement() -> dict:
        return (await client.get("/v1/customers/org_hobby/entitlements/requests", headers=headers)).json()

    assert await entitlement() == {"allowed": True, "used": "0", "limit": "50", "remaining": "50", "reason": None}
    await send(client, customers_on_plans, [request_event(f"h{i}") for i in range(49)])
    assert await entitlement() == {"allowed": True, "used": "49", "limit": "50", "remaining": "1", "reason": None}
    await send(client, customers_on_plans, [request_event("h49")])
    assert await entitlement() == {
        "allowed": False,
        "used": "50",
        "limit": "50",
        "remaining": "0",
        "reason": "LIMIT_REACHED",
    }
    await send(client, customers_on_plans, [request_event("h50")])
    assert await entitlement() == {
        "allowed": False,
        "used": "51",
        "limit": "50",
        "remaining": "0",
        "reason": "LIMIT_REACHED",
    }
    no_limit = (await client.get("/v1/customers/org_pro/entitlements/requests", headers=headers)).json()
    assert no_limit == {"allowed": True, "used": "0", "limit": None, "remaining": None, "reason": None}
    unknown = await client.get("/v1/customers/org_hobby/entitlements/nope", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "UNKNOWN_METER")


USAGE = """query($e: String!) { customer(externalId: $e) {
  usage { meter { key } quantity included limit remaining cost { amount currency }
          byDimension { dimensions quantity cost { amount currency } } }
  usageWatermark } }"""


async def test_usage_with_cost_by_dimension(client: httpx.AsyncClient, customers_on_plans: str, token_for) -> None:
    token = customers_on_plans
    tokens = [
        {
            "id": f"t{i}",
            "customer": "org_pro",
            "type": "llm.tokens",
            "timestamp": ts(),
            "properties": {"model": model, "tokens": amount},
        }
        for i, (model, amount) in enumerate([("large-1", 1_000_000), ("large-1", "0.5"), ("fast-1", 1_500_000)])
    ]
    requests = [request_event(f"p{i}", customer="org_pro", model="fast-1" if i % 2 else "large-1") for i in range(600)]
    assert (await send(client, token, tokens + requests)).json()["accepted"] == 603
    viewer = await token_for("customer", "org_pro")
    data = (await graphql(client, viewer, USAGE, {"e": "org_pro"})).json()["data"]["customer"]
    usage = {u["meter"]["key"]: u for u in data["usage"]}
    assert usage["tokens"]["quantity"] == "2500000.5"
    assert usage["tokens"]["cost"] == {"amount": "4.00", "currency": "USD"}, "3.0000015 (large) + 1.00 (fast) → 4.00"
    by_model = {d["dimensions"]["model"]: d for d in usage["tokens"]["byDimension"]}
    assert by_model["fast-1"]["cost"]["amount"] == "1.00" and by_model["large-1"]["quantity"] == "1000000.5"
    assert usage["requests"]["quantity"] == "600"
    assert usage["requests"]["cost"]["amount"] == "4.00", "500 free, then 100 × 0.04"
    assert sum(int(d["quantity"]) for d in usage["requests"]["byDimension"]) == 600
    assert data["usageWatermark"] is not None


async def test_awkward_text_is_stored_exactly(
    client: httpx.AsyncClient, customers_on_plans: str, session: AsyncSession
) -> None:
    awkward = 'tab\there, new\nline, back\\slash, \\N, quote" and ünïcode'
    event = request_event("awk\tward\\id", model=awkward, note=awkward, amount=0.1)
    assert (await send(client, customers_on_plans, [event])).json()["accepted"] == 1
    row = (
        await session.execute(
            text("SELECT event_id, properties->>'note', properties->'amount' FROM events WHERE event_id = :id"),
            {"id": "awk\tward\\id"},
        )
    ).one()
    assert tuple(row) == ("awk\tward\\id", awkward, 0.1)
    await roll_up(session)
    dims = (await session.execute(text("SELECT dimensions->>'model' FROM usage_rollups"))).scalars().all()
    assert awkward in dims


async def test_the_edge_entitlement_check_is_one_round_trip_once_its_token_and_period_are_known(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, sent_statements: SentStatements
) -> None:
    """The customer, subscription and meter in one statement, sent with the period's rollups (with
    what waits for the roller) and the partial hours' raw events, read in the period the customer's
    last question was answered in: one round trip, then the rollback that ends the transaction.
    No pool ping, no token lookup, no plan lookup (plan versions are immutable and kept in memory)."""
    await send(client, customers_on_plans, [request_event("rt-1")])
    headers = {"Authorization": f"Bearer {await token_for('viewer')}"}
    path = "/v1/customers/org_hobby/entitlements/requests"
    assert (await client.get(path, headers=headers)).json()["used"] == "1"
    sent_statements.clear()

    assert (await client.get(path, headers=headers)).json()["used"] == "1"

    assert len(sent_statements) == 3 and sent_statements.round_trips == 1, sent_statements
    assert "FROM customers c" in sent_statements[0]
    assert "usage_pending" in sent_statements[1] and "FROM events" in sent_statements[2]
