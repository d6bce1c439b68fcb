"""Usage alerts through GraphQL: create (dry run first), list on the customer, delete; hostile
input refused field by field with nothing written; concurrent creates of one name make one; the
webhook event's data carries exactly the UsageAlertFiring type's fields."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.jobs import roll_up_usage
from app.settings import Settings
from app.usage_ingest import ingest_and_commit
from tests.conftest import graphql, now

ERRORS = "userErrors { field code message }"
ALERT = "id name customerId planKey metric meterKey currency thresholdUnit thresholds spendBase { amount currency }"
CREATE = (
    f"mutation($i: CreateUsageAlertInput!) {{ createUsageAlert(input: $i) {{ usageAlert {{ {ALERT} }} {ERRORS} }} }}"
)
DELETE = f"mutation($i: DeleteUsageAlertInput!) {{ deleteUsageAlert(input: $i) {{ usageAlert {{ id deletedAt }} {ERRORS} }} }}"
FIRING = """id alertId alertName customerId metric meterKey thresholdUnit threshold thresholdQuantity usedQuantity
  thresholdAmount { amount currency } runningAmount { amount currency } periodStart periodEnd firedAt"""
CUSTOMER = f"query($id: ID!) {{ customer(id: $id) {{ usageAlerts {{ {ALERT} }} usageAlertFirings {{ {FIRING} }} }} }}"


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


async def alert_count(session: AsyncSession) -> int:
    return (await session.execute(text("SELECT count(*) FROM usage_alerts"))).scalar_one()


@pytest.fixture
async def customer(client: httpx.AsyncClient, catalog: None, token_for) -> str:
    admin = await token_for("admin")
    created = await ask(
        client,
        admin,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {"i": {"externalId": "org_alerts", "name": "Alerts", "currency": "USD", "planKey": "hobby"}},
    )
    return created["createCustomer"]["customer"]["id"]


def usage_alert(customer: str, **changes: Any) -> dict[str, Any]:
    return {"customerId": customer, "name": "Requests", "metric": "USAGE", "meterKey": "requests",
            "thresholdUnit": "PERCENT", "thresholds": ["80", "50", "100"], **changes}  # fmt: skip


async def test_an_alert_is_reviewed_created_shown_fired_and_deleted(
    client: httpx.AsyncClient,
    customer: str,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    support = await token_for("support")
    reviewed = (await ask(client, support, CREATE, {"i": usage_alert(customer, dryRun=True)}))["createUsageAlert"]
    assert reviewed["userErrors"] == [] and reviewed["usageAlert"]["thresholds"] == ["50", "80", "100"]
    assert await alert_count(session) == 0, "a dry run writes nothing"
    created = (await ask(client, support, CREATE, {"i": usage_alert(customer)}))["createUsageAlert"]
    assert created["usageAlert"] | {"id": None} == {
        "id": None, "name": "Requests", "customerId": customer, "planKey": None, "metric": "USAGE",
        "meterKey": "requests", "currency": None, "thresholdUnit": "PERCENT", "thresholds": ["50", "80", "100"],
        "spendBase": None,
    }  # fmt: skip
    items = [
        {"id": f"a-{n}", "customer": "org_alerts", "type": "request.completed", "timestamp": now().isoformat(),
         "properties": {"model": "large-1"}}
        for n in range(26)
    ]  # fmt: skip
    async with sessions() as ingesting:
        await ingest_and_commit(ingesting, items, Settings())
    await roll_up_usage(sessions)
    shown = (await ask(client, support, CUSTOMER, {"id": customer}))["customer"]
    [firing] = shown["usageAlertFirings"]
    assert (firing["threshold"], firing["thresholdQuantity"], firing["usedQuantity"]) == ("50", "25", "26")
    [data] = (await session.execute(text("SELECT data FROM webhook_events WHERE type = 'usage_alert.fired'"))).scalars()
    assert data.keys() == firing.keys(), "the event's data is the GraphQL type's fields"
    assert data["usedQuantity"] == "26" and data["alertName"] == "Requests"

    alert_id = created["usageAlert"]["id"]
    review = (await ask(client, support, DELETE, {"i": {"alertId": alert_id, "dryRun": True}}))["deleteUsageAlert"]
    assert review["usageAlert"]["deletedAt"] is not None
    assert len((await ask(client, support, CUSTOMER, {"id": customer}))["customer"]["usageAlerts"]) == 1
    for _ in range(2):  # deleting twice changes nothing
        deleted = (await ask(client, support, DELETE, {"i": {"alertId": alert_id}}))["deleteUsageAlert"]
        assert deleted["userErrors"] == []
    shown = (await ask(client, support, CUSTOMER, {"id": customer}))["customer"]
    assert shown["usageAlerts"] == [] and len(shown["usageAlertFirings"]) == 1, "what it fired stays"


HOSTILE = [
    ({"thresholds": ["-5"]}, "thresholds", "INVALID"),
    ({"thresholds": ["0"]}, "thresholds", "INVALID"),
    ({"thresholds": ["5000"]}, "thresholds", "INVALID"),
    ({"thresholds": ["1e400"]}, "thresholds", "INVALID"),
    ({"thresholds": [str(n) for n in range(1, 12)]}, "thresholds", "INVALID"),
    ({"thresholds": []}, "thresholds", "INVALID"),
    ({"thresholds": ["50", "50"]}, "thresholds", "INVALID"),
    ({"thresholds": ["0.0000000000001"]}, "thresholds", "INVALID"),
    ({"meterKey": "no_such_meter"}, "meterKey", "NOT_FOUND"),
    ({"meterKey": "x" * 10_000}, "meterKey", "NOT_FOUND"),
    ({"name": "x" * 101}, "name", "INVALID"),
    ({"name": "   "}, "name", "INVALID"),
    ({"planKey": "hobby"}, "customerId", "INVALID"),
    ({"customerId": "not-a-uuid"}, "customerId", "NOT_FOUND"),
    ({"metric": "SPEND", "meterKey": None}, "currency", "INVALID"),
    ({"metric": "SPEND", "currency": "EUR"}, "currency", "INVALID"),
    ({"metric": "SPEND", "currency": "XXX!"}, "currency", "INVALID"),
    ({"metric": "SPEND", "currency": "USD"}, "spendBase", "INVALID"),
    ({"metric": "SPEND", "currency": "USD", "spendBase": "-1"}, "spendBase", "INVALID"),
    ({"metric": "SPEND", "currency": "USD", "spendBase": "10.001"}, "spendBase", "INVALID"),
    ({"metric": "SPEND", "currency": "USD", "thresholdUnit": "ABSOLUTE", "thresholds": ["1.005"]}, "thresholds",
     "INVALID"),
]  # fmt: skip


async def test_hostile_input_is_refused_by_field_and_writes_nothing(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    for changes, field, code in HOSTILE:
        answer = (await ask(client, admin, CREATE, {"i": usage_alert(customer, **changes)}))["createUsageAlert"]
        assert answer["usageAlert"] is None, changes
        assert (field, code) in [(e["field"][-1], e["code"]) for e in answer["userErrors"]], (changes, answer)
    plan = usage_alert(customer, customerId=None, planKey="x" * 300)
    assert (await ask(client, admin, CREATE, {"i": plan}))["createUsageAlert"]["userErrors"][0]["field"] == ["planKey"]
    missing = await ask(client, admin, DELETE, {"i": {"alertId": "'; DROP TABLE usage_alerts; --"}})
    assert missing["deleteUsageAlert"]["userErrors"][0]["code"] == "NOT_FOUND"
    viewer = await token_for("viewer")
    refused = await graphql(client, viewer, CREATE, {"i": usage_alert(customer)})
    assert refused.json()["data"] is None or refused.json().get("errors"), "a viewer defines no alerts"
    assert await alert_count(session) == 0


async def test_concurrent_creates_of_one_name_make_one_alert(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    answers = await asyncio.gather(*(ask(client, admin, CREATE, {"i": usage_alert(customer)}) for _ in range(6)))
    codes = sorted(a["createUsageAlert"]["userErrors"][0]["code"] if a["createUsageAlert"]["userErrors"] else "OK"
                   for a in answers)  # fmt: skip
    assert codes == ["OK", "TAKEN", "TAKEN", "TAKEN", "TAKEN", "TAKEN"]
    assert await alert_count(session) == 1
    plan_alert = usage_alert(customer, customerId=None, planKey="hobby")
    assert (await ask(client, admin, CREATE, {"i": plan_alert}))["createUsageAlert"]["userErrors"] == [], (
        "a plan's alert may share a customer's alert name"
    )
    shown = (await ask(client, admin, CUSTOMER, {"id": customer}))["customer"]["usageAlerts"]
    assert [a["planKey"] for a in shown] == [None, "hobby"], "the customer sees their plan's alerts too"


UPDATE = (
    f"mutation($i: UpdateUsageAlertInput!) {{ updateUsageAlert(input: $i) {{ usageAlert {{ {ALERT} }} {ERRORS} }} }}"
)


async def test_an_alert_is_renamed_and_given_other_thresholds_and_refuses_hostile_changes(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    first = (await ask(client, admin, CREATE, {"i": usage_alert(customer)}))["createUsageAlert"]["usageAlert"]
    await ask(client, admin, CREATE, {"i": usage_alert(customer, name="Other")})
    change = {"alertId": first["id"], "name": "Renamed", "thresholds": ["90"]}
    review = (await ask(client, admin, UPDATE, {"i": change | {"dryRun": True}}))["updateUsageAlert"]
    assert (review["usageAlert"]["name"], review["usageAlert"]["thresholds"]) == ("Renamed", ["90"])
    assert (await session.execute(text("SELECT name FROM usage_alerts WHERE name = 'Renamed'"))).first() is None
    done = (await ask(client, admin, UPDATE, {"i": change}))["updateUsageAlert"]
    assert done["userErrors"] == [] and done["usageAlert"]["thresholds"] == ["90"]
    for hostile, field, code in [
        ({"name": "Other"}, "name", "TAKEN"),
        ({"thresholds": ["-1"]}, "thresholds", "INVALID"),
        ({"thresholds": [str(n) for n in range(1, 20)]}, "thresholds", "INVALID"),
        ({"name": "y" * 1000}, "name", "INVALID"),
        ({"alertId": "00000000-0000-0000-0000-000000000000"}, "alertId", "NOT_FOUND"),
    ]:
        refused = (await ask(client, admin, UPDATE, {"i": change | hostile}))["updateUsageAlert"]
        assert [(e["field"][-1], e["code"]) for e in refused["userErrors"]] == [(field, code)], hostile
    names = (await session.execute(text("SELECT name FROM usage_alerts ORDER BY name"))).scalars().all()
    assert names == ["Other", "Renamed"], "nothing refused was written"
