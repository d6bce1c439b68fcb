"""Usage authorizations (`POST /v1/customers/{id}/authorizations`, `authorize`): callers racing
for the last units of a limit never pass it, holds expire, the event that uses a hold settles it,
idempotency keys answer once, and hostile requests are coded 4xx that write nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import prune_usage_authorizations
from app.settings import Settings
from app.usage_ingest import ingest_limits
from metering import authorizations
from metering.authorizations import AuthorizationRequest
from metering.service import roll_up
from tests.conftest import SentStatements, graphql
from tests.metering.test_ingestion_api import customers_on_plans, request_event, send

__all__ = ["customers_on_plans"]  # a fixture, used by name

PATH = "/v1/customers/{}/authorizations"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def authorize(
    client: httpx.AsyncClient, token: str, customer: str = "org_hobby", **body: object
) -> httpx.Response:
    return await client.post(PATH.format(customer), json=body, headers=bearer(token))


async def rows(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM usage_authorizations"))).scalar_one())


async def test_64_callers_racing_for_the_last_units_never_pass_the_limit(
    live_url: str, client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    """The hobby plan allows 50 requests; 47 are used, so of 64 callers wanting one each, exactly
    3 are allowed, and the entitlement read, which holds nothing, would have let all 64 through."""
    await send(client, customers_on_plans, [request_event(f"used-{i}") for i in range(47)])
    edge = await token_for("edge")
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        check = await http.get("/v1/customers/org_hobby/entitlements/requests", headers=bearer(edge))
        assert check.json()["remaining"] == "3"
        answers = await asyncio.gather(
            *(authorize(http, edge, meter="requests", quantity=1, idempotencyKey=f"race-{i}") for i in range(64))
        )
    assert {answer.status_code for answer in answers} == {201}
    allowed = [a.json() for a in answers if a.json()["allowed"]]
    refused = [a.json() for a in answers if not a.json()["allowed"]]
    assert len(allowed) == 3 and len(refused) == 61
    assert sorted(a["remaining"] for a in allowed) == ["0", "1", "2"], "each saw the holds made before it"
    assert {(r["reason"], r["remaining"], r["reserved"]) for r in refused} == {("LIMIT_REACHED", "0", "3")}
    held = await session.execute(
        text("SELECT coalesce(sum(quantity), 0) FROM usage_authorizations WHERE allowed AND settled_at IS NULL")
    )
    assert held.scalar_one() == 3


async def test_the_database_lock_alone_orders_callers_of_several_processes(
    client: httpx.AsyncClient,
    customers_on_plans: str,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    """Without the process's own turn (as callers in several `tally serve` processes would be):
    24 sessions authorizing at once for the last 3 units get exactly 3."""
    await send(client, customers_on_plans, [request_event(f"used-{i}") for i in range(47)])
    one = authorizations.quantity_of(1, ingest_limits(settings))

    async def caller(number: int) -> bool:
        async with sessions() as session:
            done = await authorizations.authorize(
                session,
                "org_hobby",
                AuthorizationRequest("requests", one, f"process-{number}"),
                as_of=datetime.now(UTC),
                may_see=lambda _: True,
            )
            await session.commit()
            return done.authorization.allowed

    assert sum(await asyncio.gather(*(caller(number) for number in range(24)))) == 3


async def test_callers_that_settle_their_holds_while_others_authorize_never_pass_the_limit(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    """Each of 24 callers authorizes one request and, when allowed, sends the event that settles
    it, twice over: settlements commit between other callers' reads of what is held and what is
    used, and the usage still never passes the limit of 50."""
    await send(client, customers_on_plans, [request_event(f"used-{i}") for i in range(40)])
    edge = await token_for("edge")

    async def caller(number: int) -> int:
        allowed = 0
        for round_ in range(2):
            held = (
                await authorize(client, edge, meter="requests", quantity=1, idempotencyKey=f"{number}-{round_}")
            ).json()
            if held["allowed"]:
                event = request_event(f"settles-{number}-{round_}") | {"authorization": held["id"]}
                assert (await send(client, edge, [event])).json()["accepted"] == 1
                allowed += 1
        return allowed

    allowed = sum(await asyncio.gather(*(caller(number) for number in range(24))))
    used = (await client.get("/v1/customers/org_hobby/entitlements/requests", headers=bearer(edge))).json()["used"]
    assert int(used) == 40 + allowed <= 50
    assert allowed > 0  # not exactly 10: a settlement committing between a caller's two reads refuses it early


async def test_a_hold_expires_and_is_released(
    customers_on_plans: str,
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    await send(client, customers_on_plans, [request_event(f"e-{i}") for i in range(40)])
    now = datetime.now(UTC)

    async def hold(key: str, quantity: int, at: datetime) -> authorizations.Authorization:
        done = await authorizations.authorize(
            session,
            "org_hobby",
            AuthorizationRequest("requests", authorizations.quantity_of(quantity, ingest_limits(settings)), key, 60),
            as_of=at,
            may_see=lambda _: True,
        )
        await session.commit()
        return done.authorization

    first = await hold("a", 10, now)
    assert (first.allowed, first.remaining, first.expires_at) == (True, 0, now + timedelta(seconds=60))
    assert not (await hold("b", 1, now + timedelta(seconds=59))).allowed, "still held a second before expiry"
    later = await hold("c", 4, now + timedelta(seconds=60))
    assert (later.allowed, later.reserved, later.remaining) == (True, 4, 6), "released at expiresAt"
    assert [a.idempotency_key for a in await authorizations.live(session, first.customer_id, as_of=now)] == ["a", "c"]
    assert await prune_usage_authorizations(sessions, as_of=now + timedelta(days=7)) == 0, "keys answer a week"
    assert await prune_usage_authorizations(sessions, as_of=now + timedelta(days=8)) == 3
    assert await rows(session) == 0


async def test_the_event_that_uses_a_hold_settles_it_and_counts_once(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    await send(client, customers_on_plans, [request_event(f"e-{i}") for i in range(45)])
    edge = await token_for("edge")
    held = (await authorize(client, edge, meter="requests", quantity="5", idempotencyKey="k1")).json()
    assert (held["allowed"], held["remaining"]) == (True, "0")
    assert not (await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="k2")).json()["allowed"]

    other = request_event("other-customer", customer="org_pro")
    other["authorization"] = held["id"]
    malformed = request_event("malformed")
    malformed["authorization"] = "not-a-uuid"
    used = request_event("uses-the-hold")
    used["authorization"] = held["id"]
    answer = (await send(client, customers_on_plans, [other, malformed, used])).json()
    assert answer["accepted"] == 2
    assert answer["rejected"] == [
        {"index": 1, "code": "INVALID_EVENT", "message": "authorization must be the id of an authorization (a UUID)"}
    ]
    assert (await send(client, customers_on_plans, [used])).json()["duplicates"] == 1

    settled = (
        await session.execute(
            text("SELECT settled_by_event, settled_at IS NOT NULL FROM usage_authorizations WHERE id = :id"),
            {"id": held["id"]},
        )
    ).one()
    assert tuple(settled) == ("uses-the-hold", True), "another customer's event does not settle it"
    entitlement = await client.get("/v1/customers/org_hobby/entitlements/requests", headers=bearer(edge))
    assert entitlement.json()["used"] == "46", "the event counts once, as usage"
    after = (await authorize(client, edge, meter="requests", quantity=4, idempotencyKey="k3")).json()
    assert (after["allowed"], after["used"], after["reserved"], after["remaining"]) == (True, "46", "4", "0")
    await roll_up(session)
    await session.commit()
    assert not (await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="k4")).json()["allowed"]


async def test_an_idempotency_key_answers_once(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    edge = await token_for("edge")
    first = await authorize(client, edge, meter="requests", quantity=30, idempotencyKey="once", ttlSeconds=120)
    again = await authorize(client, edge, meter="requests", quantity="30.0", idempotencyKey="once", ttlSeconds=120)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    for changed in ({"quantity": 31}, {"ttlSeconds": 60}, {"meter": "tokens"}):
        body = {"meter": "requests", "quantity": 30, "idempotencyKey": "once", "ttlSeconds": 120, **changed}
        reused = await authorize(client, edge, **body)
        assert reused.status_code == 409
        assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    refused = await authorize(client, edge, meter="requests", quantity=30, idempotencyKey="too-much")
    assert refused.json()["allowed"] is False
    assert (
        await authorize(client, edge, customer="org_pro", meter="requests", quantity=1, idempotencyKey="once")
    ).json()["allowed"], "keys are the customer's own"
    assert await rows(session) == 3
    reserved = (await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="x")).json()["reserved"]
    assert reserved == "31", "the retried key held nothing more"


async def test_without_a_limit_everything_is_allowed_and_a_suspended_customer_nothing(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    edge = await token_for("edge")
    unlimited = await authorize(client, edge, customer="org_pro", meter="requests", quantity="1e9", idempotencyKey="u")
    assert unlimited.json() | {"id": None, "createdAt": None, "expiresAt": None} == {
        "id": None,
        "customer": "org_pro",
        "meter": "requests",
        "quantity": "1000000000",
        "allowed": True,
        "reason": None,
        "used": "0",
        "limit": None,
        "reserved": "1000000000",
        "remaining": None,
        "idempotencyKey": "u",
        "ttlSeconds": 300,
        "createdAt": None,
        "expiresAt": None,
        "settledAt": None,
    }
    await session.execute(text("UPDATE customers SET status = 'SUSPENDED' WHERE external_id = 'org_pro'"))
    await session.commit()
    refused = (
        await authorize(client, edge, customer="org_pro", meter="requests", quantity=1, idempotencyKey="s")
    ).json()
    assert (refused["allowed"], refused["reason"]) == (False, "CUSTOMER_SUSPENDED")


HOSTILE_BODIES: list[tuple[object, int, str]] = [
    ({"meter": "requests", "quantity": -1, "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": 0, "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": "NaN", "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": "Infinity", "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": "1e400", "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": "1e-400", "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": "9" * 20_000, "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": True, "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": [1], "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "idempotencyKey": "k"}, 422, "INVALID_QUANTITY"),
    ({"meter": "requests", "quantity": 1}, 422, "INVALID_IDEMPOTENCY_KEY"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "k" * 256}, 422, "INVALID_IDEMPOTENCY_KEY"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "nul\u0000"}, 422, "INVALID_IDEMPOTENCY_KEY"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "k", "ttlSeconds": 0}, 422, "INVALID_TTL"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "k", "ttlSeconds": 86_401}, 422, "INVALID_TTL"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "k", "ttlSeconds": 1.5}, 422, "INVALID_TTL"),
    ({"meter": "requests", "quantity": 1, "idempotencyKey": "k", "ttl_seconds": 5}, 400, "INVALID_BODY"),
    ({"meter": "m" * 256, "quantity": 1, "idempotencyKey": "k"}, 422, "INVALID_METER"),
    ({"meter": "m" * 1_000_000, "quantity": 1, "idempotencyKey": "k"}, 413, "BODY_TOO_LARGE"),
    ({"meter": "nope", "quantity": 1, "idempotencyKey": "k"}, 404, "UNKNOWN_METER"),
    ([{"meter": "requests"}], 400, "INVALID_BODY"),
    ("requests", 400, "INVALID_BODY"),
]


async def test_hostile_requests_are_coded_refusals_that_write_nothing(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    edge = await token_for("edge")
    for body, status, code in HOSTILE_BODIES:
        answer = await client.post(PATH.format("org_hobby"), json=body, headers=bearer(edge))
        assert (answer.status_code, answer.json()["code"]) == (status, code), body
    for raw in (b"{", b"", b"\xff\xfe", b"[" * 10_000, b'{"meter": "requests", "quantity": 1e999999999}'):
        answer = await client.post(PATH.format("org_hobby"), content=raw, headers=bearer(edge))
        assert answer.status_code in (400, 422) and answer.json()["code"] in ("INVALID_BODY", "INVALID_QUANTITY"), raw
    valid = {"meter": "requests", "quantity": 1, "idempotencyKey": "k"}
    mine = await token_for("customer", "org_pro")
    assert (await authorize(client, mine, **valid)).json()["code"] == "NOT_FOUND", "another customer's token"
    assert (await authorize(client, mine, customer="org_nobody", **valid)).status_code == 404
    for role in ("ingest", "viewer"):
        assert (await authorize(client, await token_for(role), **valid)).status_code == 403, role
    assert (await client.post(PATH.format("org_hobby"), json=valid)).status_code == 401
    seats = await authorize(client, edge, meter="seats", quantity=1, idempotencyKey="seats")
    assert seats.status_code == 201, "a unique_count meter grows by what events add"
    await session.execute(text("DELETE FROM usage_authorizations"))
    await session.commit()
    assert (await authorize(client, mine, customer="org_pro", **valid)).status_code == 201, "its own customer"
    assert await rows(session) == 1


async def test_authorize_over_graphql_and_the_live_holds(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    admin = await token_for("admin")
    customer_id = (await client.get("/v1/customers/org_hobby", headers=bearer(admin))).json()["id"]
    mutation = """mutation($i: AuthorizeInput!) { authorize(input: $i) {
        created authorization { id meter quantity allowed remaining reserved expiresAt settledAt }
        userErrors { field code } } }"""
    base = {"customerId": customer_id, "meter": "requests", "idempotencyKey": "g1", "ttlSeconds": 60}
    first = (await graphql(client, admin, mutation, {"i": base | {"quantity": "20"}})).json()["data"]["authorize"]
    assert first["created"] and first["authorization"]["allowed"] and first["authorization"]["remaining"] == "30"
    again = (await graphql(client, admin, mutation, {"i": base | {"quantity": "20"}})).json()["data"]["authorize"]
    assert (again["created"], again["authorization"]["id"]) == (False, first["authorization"]["id"])
    for bad, code in (("21", "IDEMPOTENCY_KEY_REUSED"), ("-3", "INVALID_QUANTITY"), ("1e400", "INVALID_QUANTITY")):
        errors = (await graphql(client, admin, mutation, {"i": base | {"quantity": bad}})).json()["data"]["authorize"]
        assert errors["userErrors"][0]["code"] == code
    elsewhere = base | {"customerId": str(uuid.uuid4()), "quantity": "1"}
    missing = (await graphql(client, admin, mutation, {"i": elsewhere})).json()["data"]["authorize"]
    assert missing["userErrors"] == [{"field": ["customerId"], "code": "NOT_FOUND"}]
    live = await graphql(
        client,
        admin,
        'query($id: ID!) { customer(id: $id) { liveAuthorizations { id quantity } entitlement(meter: "requests") '
        "{ remaining } } }",
        {"id": customer_id},
    )
    found = live.json()["data"]["customer"]
    assert found["liveAuthorizations"] == [{"id": first["authorization"]["id"], "quantity": "20"}]
    assert found["entitlement"]["remaining"] == "50", "the entitlement read holds nothing and counts no holds"


async def test_sibling_graphql_fields_read_usage_at_once_on_the_requests_one_connection(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    """GraphQL resolves sibling fields concurrently on the request's one session: usage reads that
    would go out in a pipeline beside another field's statements must not break each other (they
    did: "cannot enter pipeline mode, connection not idle", a DATABASE_UNAVAILABLE on the page)."""
    await send(client, customers_on_plans, [request_event(f"sib-{i}") for i in range(3)])
    admin = await token_for("admin")
    edge = await token_for("edge")
    expected = (await client.get("/v1/customers/org_hobby/entitlements/requests", headers=bearer(edge))).json()
    siblings = " ".join(f'e{i}: entitlement(meter: "requests") {{ used remaining }}' for i in range(6))
    query = f"""query {{ customer(externalId: "org_hobby") {{ {siblings}
        upcomingInvoice {{ total {{ amount }} }} balance {{ credits {{ amount }} }} }} }}"""
    for _ in range(5):
        answer = (await graphql(client, admin, query)).json()
        assert "errors" not in answer, answer["errors"]
        for i in range(6):
            found = answer["data"]["customer"][f"e{i}"]
            assert (found["used"], found["remaining"]) == (expected["used"], expected["remaining"])


async def test_an_authorization_is_the_entitlement_read_plus_one_insert(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, sent_statements: SentStatements
) -> None:
    """The lookup taking the lock, the read of what is held and the period's usage as the
    entitlement read reads it (rollups, raw events of the partial hours) go in one pipeline (one
    round trip), the usage read in the period of the pair's last answer; then the insert, and the
    commit."""
    edge = await token_for("edge")
    await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="warm")
    sent_statements.clear()

    assert (await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="rt")).json()["allowed"]

    assert len(sent_statements) == 5 and sent_statements.round_trips == 2, sent_statements
    assert "pg_advisory_xact_lock" in sent_statements[0] and "usage_authorizations" in sent_statements[1]
    assert "usage_pending" in sent_statements[2] and "FROM events" in sent_statements[3]
    assert "INSERT INTO usage_authorizations" in sent_statements[4]


async def test_a_period_that_moved_since_the_last_answer_is_read_again(
    client: httpx.AsyncClient,
    customers_on_plans: str,
    token_for,
    session: AsyncSession,
    sent_statements: SentStatements,
) -> None:
    """The usage read ahead is the last answer's period; when the subscription's calendar has moved
    since (as a change of interval starts a new one), the new period's usage is read, one round
    trip later, and the answer counts only what it holds."""
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    await send(
        client, customers_on_plans, [{**request_event(f"old-{i}"), "timestamp": two_hours_ago} for i in range(7)]
    )
    edge = await token_for("edge")
    path = "/v1/customers/org_hobby/entitlements/requests"
    assert (await client.get(path, headers=bearer(edge))).json()["used"] == "7"
    first = await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="before")
    assert first.json()["used"] == "7"

    await session.execute(
        text(
            "UPDATE subscriptions SET billing_anchor = now() - interval '1 hour' "
            "WHERE customer_id = (SELECT id FROM customers WHERE external_id = 'org_hobby')"
        )
    )
    await session.commit()
    sent_statements.clear()

    moved = await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="after")
    assert moved.json()["used"] == "0" and moved.json()["allowed"], moved.json()
    assert sent_statements.round_trips == 3, "the guessed period's rows are not used; the new period is read"
    assert (await client.get(path, headers=bearer(edge))).json()["used"] == "0"
