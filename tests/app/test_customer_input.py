"""createCustomer and changePlan refuse what would stop billing or fool a reader: a subscription
start centuries away (a start in 1800 issued 2,726 invoices; one in 9999 broke the anomaly scan),
a change back-dated past the window, and external ids that only look like another's."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.conftest import graphql, now

CREATE = """
mutation CreateCustomer($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id externalId } userErrors { field code message } }
}"""
CHANGE = """
mutation ChangePlan($input: ChangePlanInput!) {
  changePlan(input: $input) { effectiveAt userErrors { field code message } }
}"""
FIND = "query Find($externalId: String!) { customer(externalId: $externalId) { externalId } }"


async def create(client: httpx.AsyncClient, token: str, **fields: object) -> dict:
    payload = {"name": "Someone", "currency": "USD", **fields}
    response = await graphql(client, token, CREATE, {"input": payload})
    assert response.status_code == 200, response.text
    return response.json()["data"]["createCustomer"]


async def customers_count(session: AsyncSession) -> int:
    return (await session.execute(text("SELECT count(*) FROM customers"))).scalar_one()


@pytest.mark.parametrize(
    ("started_at", "setting"),
    [
        ("1800-01-01T00:00:00Z", "TALLY_BACKDATE_MAX_DAYS"),
        ((now() - timedelta(days=36)).isoformat(), "TALLY_BACKDATE_MAX_DAYS"),
        ("9999-12-01T00:00:00Z", "TALLY_START_AHEAD_MAX_DAYS"),
        ((now() + timedelta(days=367)).isoformat(), "TALLY_START_AHEAD_MAX_DAYS"),
    ],
    ids=["year-1800", "36-days-ago", "year-9999", "367-days-ahead"],
)
async def test_a_subscription_start_outside_the_window_is_a_field_error_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, catalog: None, token_for, started_at: str, setting: str
) -> None:
    token = await token_for("admin")
    payload = await create(client, token, externalId="org_old", planKey="pro", startedAt=started_at)
    assert payload["customer"] is None
    [error] = payload["userErrors"]
    assert (error["field"], error["code"]) == (["startedAt"], "INVALID") and setting in error["message"]
    assert await customers_count(session) == 0


async def test_a_start_inside_the_window_is_accepted(client: httpx.AsyncClient, catalog: None, token_for) -> None:
    token = await token_for("admin")
    started_at = (now() - timedelta(days=30)).isoformat()
    payload = await create(client, token, externalId="org_recent", planKey="pro", startedAt=started_at)
    assert payload["userErrors"] == [] and payload["customer"]["externalId"] == "org_recent"


async def test_a_plan_change_back_dated_past_the_window_is_a_field_error(
    client: httpx.AsyncClient, session: AsyncSession, catalog: None, token_for, settings
) -> None:
    settings.backdate_max_days = 2
    token = await token_for("admin")
    created = await create(
        client, token, externalId="org_move", planKey="pro", startedAt=(now() - timedelta(days=1)).isoformat()
    )
    assert created["userErrors"] == []
    response = await graphql(
        client,
        token,
        CHANGE,
        {
            "input": {
                "customerId": created["customer"]["id"],
                "planKey": "team",
                "effective": "IMMEDIATELY",
                "idempotencyKey": "too-far-back",
                "at": (now() - timedelta(days=3)).isoformat(),
            }
        },
    )
    errors = response.json()["data"]["changePlan"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [(["at"], "INVALID")]
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 0


@pytest.mark.parametrize(
    ("external_id", "shown"),
    [("org\u200bacme", "U+200B"), ("org\u202eacme", "U+202E"), ("org\x00acme", "U+0000"), ("org\nacme", "U+000A")],
)
async def test_invisible_characters_in_an_external_id_are_refused(
    client: httpx.AsyncClient, session: AsyncSession, catalog: None, token_for, external_id: str, shown: str
) -> None:
    token = await token_for("admin")
    payload = await create(client, token, externalId=external_id)
    [error] = payload["userErrors"]
    assert error["field"] == ["externalId"] and shown in error["message"]
    assert await customers_count(session) == 0


async def test_a_look_alike_external_id_is_the_same_customer(
    client: httpx.AsyncClient, catalog: None, token_for
) -> None:
    """Full-width letters are NFKC-normalised: "ｏｒｇ_acme" is org_acme, taken, and found by either."""
    token = await token_for("admin")
    assert (await create(client, token, externalId="org_acme"))["userErrors"] == []
    again = await create(client, token, externalId="\uff4f\uff52\uff47_acme")
    assert [e["code"] for e in again["userErrors"]] == ["TAKEN"]
    found = await graphql(client, token, FIND, {"externalId": "\uff4f\uff52\uff47_acme"})
    assert found.json()["data"]["customer"]["externalId"] == "org_acme"
