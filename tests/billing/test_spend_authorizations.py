"""Spend authorizations (`POST /v1/customers/{id}/authorizations` with an `amount`,
`authorizeSpend`): money held against the credits the period leaves and the spend cap; callers
racing for the last of it never pass it, holds expire, the event that spends a hold settles it,
keys answer once, and hostile requests are coded 4xx that write nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window
from app.settings import Settings
from billing.credits import spend_authorizations
from billing.credits.spend_authorizations import SpendRequest
from tests.conftest import graphql
from tests.metering.test_authorizations import PATH, authorize, bearer, rows
from tests.metering.test_ingestion_api import customers_on_plans, request_event, send

__all__ = ["customers_on_plans"]  # a fixture, used by name


async def customer_id_of(client: httpx.AsyncClient, admin: str, external_id: str) -> str:
    return (await client.get(f"/v1/customers/{external_id}", headers=bearer(admin))).json()["id"]


async def grant(client: httpx.AsyncClient, admin: str, customer_id: str, amount: str, key: str) -> None:
    answer = await graphql(
        client,
        admin,
        "mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { userErrors { code } } }",
        {"i": {"customerId": customer_id, "amount": amount, "reason": "test", "idempotencyKey": key}},
    )
    assert answer.json()["data"]["grantCredits"]["userErrors"] == []


async def set_cap(client: httpx.AsyncClient, admin: str, customer_id: str, amount: str | None) -> dict:
    answer = await graphql(
        client,
        admin,
        "mutation($i: SetSpendCapInput!) { setSpendCap(input: $i) { creditBalance { spendCap { amount } } "
        "userErrors { field code } } }",
        {"i": {"customerId": customer_id, "currency": "USD", "amount": amount}},
    )
    return answer.json()["data"]["setSpendCap"]


async def upcoming_subtotal(client: httpx.AsyncClient, admin: str, customer_id: str) -> Decimal:
    answer = await graphql(
        client,
        admin,
        "query($id: ID!) { customer(id: $id) { upcomingInvoice { subtotal { amount } } } }",
        {"id": customer_id},
    )
    return Decimal(answer.json()["data"]["customer"]["upcomingInvoice"]["subtotal"]["amount"])


async def test_64_callers_racing_for_the_last_credits_never_pass_them(
    live_url: str, client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    """org_hobby's plan costs nothing, so the 7.00 USD granted are all available: of 64 callers
    wanting 0.25 each, exactly 28 are allowed."""
    admin, edge = await token_for("admin"), await token_for("edge")
    await grant(client, admin, await customer_id_of(client, admin, "org_hobby"), "7.00", "g")
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        answers = await asyncio.gather(
            *(authorize(http, edge, amount="0.25", currency="USD", idempotencyKey=f"race-{i}") for i in range(64))
        )
    assert {answer.status_code for answer in answers} == {201}
    allowed = [a.json() for a in answers if a.json()["allowed"]]
    refused = [a.json() for a in answers if not a.json()["allowed"]]
    assert len(allowed) == 28
    assert sorted(Decimal(a["remaining"]) for a in allowed) == [Decimal(n) / 4 for n in range(28)]
    assert {(r["reason"], r["remaining"], r["reserved"]) for r in refused} == {("INSUFFICIENT_CREDITS", "0.00", "7.00")}
    held = await session.execute(
        text("SELECT sum(amount) FROM usage_authorizations WHERE allowed AND settled_at IS NULL AND meter_id IS NULL")
    )
    assert held.scalar_one() == 700


async def test_a_spend_cap_counts_what_the_period_charges_beyond_the_credits(
    client: httpx.AsyncClient, customers_on_plans: str, token_for
) -> None:
    """org_pro pays a 20.00 base fee and 0.04 a request past 500: what the period charges so far
    (the upcoming invoice's subtotal, as its page shows it) counts against the cap."""
    admin, edge = await token_for("admin"), await token_for("edge")
    customer_id = await customer_id_of(client, admin, "org_pro")
    no_cap = (await authorize(client, edge, "org_pro", amount="1", currency="USD", idempotencyKey="n")).json()
    assert (no_cap["allowed"], no_cap["reason"], no_cap["spendCap"]) == (False, "INSUFFICIENT_CREDITS", None)

    assert (await set_cap(client, admin, customer_id, "30"))["creditBalance"]["spendCap"] == {"amount": "30.00"}
    await send(client, customers_on_plans, [request_event(f"r-{i}", customer="org_pro") for i in range(600)])
    spent = await upcoming_subtotal(client, admin, customer_id)
    assert spent > Decimal("20")
    headroom = Decimal("30") - spent
    first = (await authorize(client, edge, "org_pro", amount="2.50", currency="USD", idempotencyKey="a")).json()
    assert first["allowed"] and (Decimal(first["spent"]), first["spendCap"]) == (spent, "30.00")
    assert Decimal(first["remaining"]) == headroom - Decimal("2.50")
    too_much = str(headroom - Decimal("2.50") + Decimal("0.01"))
    over = (await authorize(client, edge, "org_pro", amount=too_much, currency="USD", idempotencyKey="b")).json()
    assert (over["allowed"], over["reason"]) == (False, "SPEND_CAP_REACHED")

    await grant(client, admin, customer_id, "1.00", "credits")
    with_credits = (
        await authorize(client, edge, "org_pro", amount=too_much, currency="USD", idempotencyKey="c")
    ).json()
    assert with_credits["allowed"], "credits the period leaves add to what the cap allows"
    assert (await set_cap(client, admin, customer_id, None))["creditBalance"]["spendCap"] is None
    for bad in ("0", "-5", "0.001"):
        errors = (await set_cap(client, admin, customer_id, bad))["userErrors"]
        assert [(e["field"], e["code"]) for e in errors] == [(["amount"], "INVALID_AMOUNT")], bad


async def test_a_hold_expires_and_the_event_that_spends_it_settles_it(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession, settings: Settings
) -> None:
    admin, edge = await token_for("admin"), await token_for("edge")
    customer_id = await customer_id_of(client, admin, "org_hobby")
    await grant(client, admin, customer_id, "10.00", "g")
    now = datetime.now(UTC) - timedelta(minutes=5)  # these holds have all expired by the requests below
    window = billing_window(settings)
    ids = (await session.execute(text("SELECT id FROM customers WHERE external_id = 'org_hobby'"))).scalar_one()

    async def hold(key: str, cents: int, at: datetime) -> spend_authorizations.SpendAuthorization:
        done = await spend_authorizations.authorize_spend(
            session, ids, SpendRequest(cents, "USD", key, 60), as_of=at, window=window
        )
        await session.commit()
        return done.authorization

    first = await hold("a", 1000, now)
    assert (first.allowed, first.remaining, first.expires_at) == (True, 0, now + timedelta(seconds=60))
    assert not (await hold("b", 1, now + timedelta(seconds=59))).allowed, "still held a second before expiry"
    later = await hold("c", 400, now + timedelta(seconds=60))
    assert (later.allowed, later.reserved, later.remaining) == (True, 400, 600), "released at expiresAt"

    held = (await authorize(client, edge, amount="10", currency="USD", idempotencyKey="k1")).json()
    assert (held["allowed"], held["remaining"]) == (True, "0.00")
    assert not (await authorize(client, edge, amount="0.01", currency="USD", idempotencyKey="k0")).json()["allowed"]
    live = await graphql(
        client, admin, "query($id: ID!) { customer(id: $id) { liveSpendAuthorizations { id } } }", {"id": customer_id}
    )
    assert {"id": held["id"]} in live.json()["data"]["customer"]["liveSpendAuthorizations"]
    spends = request_event("spends-the-hold") | {"authorization": held["id"]}
    assert (await send(client, customers_on_plans, [spends])).json()["accepted"] == 1
    settled = await session.execute(
        text("SELECT settled_by_event FROM usage_authorizations WHERE id = :id"), {"id": held["id"]}
    )
    assert settled.scalar_one() == "spends-the-hold"
    live = await graphql(
        client, admin, "query($id: ID!) { customer(id: $id) { liveSpendAuthorizations { id } } }", {"id": customer_id}
    )
    assert {"id": held["id"]} not in live.json()["data"]["customer"]["liveSpendAuthorizations"]
    again = (await authorize(client, edge, amount="10", currency="USD", idempotencyKey="k2")).json()
    assert again["allowed"], "the settled hold holds nothing more (hobby usage costs nothing)"


async def test_an_idempotency_key_answers_once_whatever_it_holds(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    admin, edge = await token_for("admin"), await token_for("edge")
    await grant(client, admin, await customer_id_of(client, admin, "org_hobby"), "100", "g")
    first = await authorize(client, edge, amount="30", currency="USD", idempotencyKey="once", ttlSeconds=120)
    again = await authorize(client, edge, amount="30.00", currency="usd", idempotencyKey="once", ttlSeconds=120)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    for changed in ({"amount": "31"}, {"ttlSeconds": 60}):
        reused = await authorize(
            client, edge, **({"amount": "30", "currency": "USD", "idempotencyKey": "once", "ttlSeconds": 120} | changed)
        )
        assert (reused.status_code, reused.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    as_meter = await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="once")
    assert (as_meter.status_code, as_meter.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    await authorize(client, edge, meter="requests", quantity=1, idempotencyKey="meter-key")
    as_money = await authorize(client, edge, amount="1", currency="USD", idempotencyKey="meter-key")
    assert (as_money.status_code, as_money.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert await rows(session) == 2


HOSTILE_SPEND_BODIES: list[tuple[object, int, str]] = [
    ({"amount": "-1", "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": 0, "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "0.001", "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "ten dollars", "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "NaN", "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "1e400", "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "9" * 20_000, "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": True, "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": [1], "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": None, "currency": "USD", "idempotencyKey": "k"}, 422, "INVALID_AMOUNT"),
    ({"amount": "1", "idempotencyKey": "k"}, 422, "INVALID_CURRENCY"),
    ({"amount": "1", "currency": "DOLLARS", "idempotencyKey": "k"}, 422, "INVALID_CURRENCY"),
    ({"amount": "1", "currency": "EUR", "idempotencyKey": "k"}, 422, "CURRENCY_MISMATCH"),
    ({"amount": "1", "currency": "USD"}, 422, "INVALID_IDEMPOTENCY_KEY"),
    ({"amount": "1", "currency": "USD", "idempotencyKey": "k" * 256}, 422, "INVALID_IDEMPOTENCY_KEY"),
    ({"amount": "1", "currency": "USD", "idempotencyKey": "k", "ttlSeconds": 0}, 422, "INVALID_TTL"),
    ({"amount": "1", "currency": "USD", "idempotencyKey": "k", "meter": "requests"}, 400, "INVALID_BODY"),
]


async def test_hostile_spend_requests_are_coded_refusals_that_write_nothing(
    client: httpx.AsyncClient, customers_on_plans: str, token_for, session: AsyncSession
) -> None:
    edge = await token_for("edge")
    for body, status, code in HOSTILE_SPEND_BODIES:
        answer = await client.post(PATH.format("org_hobby"), json=body, headers=bearer(edge))
        assert (answer.status_code, answer.json()["code"]) == (status, code), body
    valid = {"amount": "1", "currency": "USD", "idempotencyKey": "k"}
    mine = await token_for("customer", "org_pro")
    assert (await authorize(client, mine, **valid)).status_code == 404, "another customer's token"
    assert (await authorize(client, edge, customer="org_nobody", **valid)).status_code == 404
    assert (await authorize(client, await token_for("viewer"), **valid)).status_code == 403
    assert await rows(session) == 0
    assert (await authorize(client, mine, customer="org_pro", **valid)).status_code == 201, "its own customer"
    assert await rows(session) == 1
