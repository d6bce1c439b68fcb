"""`tally alert create|list|update|delete` against a real database: outputs, JSON, a dry run that writes
nothing, refusals as one-line reasons with exit 1 and nothing written."""

from __future__ import annotations

import json

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.app.test_cli import run, scalar
from tests.conftest import now

__all__ = ["run"]


@pytest.fixture
async def customer(session: AsyncSession, catalog: None) -> None:
    await create_customer(
        session, NewCustomer(external_id="org_cli", name="CLI Co", currency="USD", plan_key="hobby"), as_of=now()
    )
    await session.commit()


def test_an_alert_is_created_after_a_dry_run_listed_and_deleted(run, database_url: str, customer: None) -> None:
    preview = run("alert", "create", "Requests", "50", "80", "--customer", "org_cli", "--meter", "requests",
                  "--percent", "--dry-run")  # fmt: skip
    assert preview.exit_code == 0 and "would create" in preview.output and "usage at 50%, 80%" in preview.output
    assert scalar(database_url, "SELECT count(*) FROM usage_alerts") == 0
    made = run("alert", "create", "Budget", "15", "20.50", "--customer", "org_cli", "--currency", "USD", "--json")
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert (created["metric"], created["thresholds"], created["dryRun"]) == ("spend", ["15", "20.5"], False)
    listed = json.loads(run("alert", "list", "org_cli", "--json").stdout)
    assert [a["name"] for a in listed["alerts"]] == ["Budget"] and listed["fired"] == []
    renamed = run("alert", "update", created["id"], "10", "30", "--name", "Monthly budget", "--json")
    assert renamed.exit_code == 0, renamed.output
    assert (json.loads(renamed.stdout)["name"], json.loads(renamed.stdout)["thresholds"]) == (
        "Monthly budget",
        ["10", "30"],
    )
    kept = json.loads(run("alert", "update", created["id"], "--name", "Budget", "--json").stdout)
    assert (kept["name"], kept["thresholds"]) == ("Budget", ["10", "30"]), "thresholds left out are kept"
    refused = run("alert", "update", created["id"], "0")
    assert refused.exit_code == 1 and "above 0" in refused.output.replace("\n", "")
    deleted = run("alert", "delete", created["id"])
    assert deleted.exit_code == 0 and "deleted" in deleted.output
    assert "no alerts" in run("alert", "list", "org_cli").output


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("create", "x", "--customer", "org_cli", "--meter", "requests", "--", "-5"), "each threshold above 0"),
        (("create", "x", "abc", "--customer", "org_cli", "--meter", "requests"), "thresholds: 'abc' is not a decimal"),
        (("create", "x" * 10_000, *[str(n) for n in range(1, 12)], "--customer", "org_cli", "--meter", "nope"),
         "give 1 to 10"),
        (("create", "x", "5", "--customer", "nobody", "--meter", "requests"), "--customer:"),
        (("delete", "not-an-id"), "alertId: no such alert"),
        (("update", "not-an-id", "5"), "alertId: no such alert"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_with_exit_1_and_writes_nothing(
    run, database_url: str, customer: None, args: tuple[str, ...], reason: str
) -> None:
    result = run("alert", *args)
    assert result.exit_code == 1 and reason in result.output.replace("\n", ""), result.output
    assert scalar(database_url, "SELECT count(*) FROM usage_alerts") == 0
