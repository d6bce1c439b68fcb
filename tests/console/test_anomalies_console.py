"""The console's Anomalies page in-process: the ledger's failure first and loud, filters without
JavaScript and as an htmx fragment, acknowledge and resolve with a note (CSRF, finance only), and
the filtered CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from billing.findings import Finding, raise_anomaly
from customers.service import NewCustomer, create_customer
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in

DETECTED = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
async def anomalies(session: AsyncSession, catalog: None) -> None:
    """Finance and support staff; a ledger failure, a usage spike and an unreconciled payment."""
    for email, role in (("fin@example.com", "finance"), ("cs@example.com", "support")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    acme = await create_customer(session, NewCustomer(external_id="org_acme", name="Acme", currency="USD"), as_of=now())
    for kind, customer_id, severity, summary, days_later in (
        ("LEDGER_INVARIANT", None, "critical", "1 ledger invariant violation(s): unbalanced transaction", 0),
        ("USAGE_SPIKE", acme.id, "medium", "calls on 2026-03-11: 40 call, 4x the 14-day median of 10", 1),
        ("UNRECONCILED", acme.id, "high", "1 open difference(s) with Stripe: AMOUNT_MISMATCH pi_1", 2),
    ):
        start = DETECTED + timedelta(days=days_later)
        finding = Finding(kind, customer_id, start, start + timedelta(days=1), severity, summary, {"ratio": "4"})
        await raise_anomaly(session, finding, as_of=start)
    await session.commit()


def kinds_in(page: str) -> list[str]:
    return re.findall(r"<td><code>([A-Z_]+)</code></td>", page)


def row_id(page: str, kind: str) -> str:
    match = re.search(r'id="anomaly-([0-9a-f-]{36})">\s*<td>.*?<code>' + kind, page, re.S)
    assert match, kind
    return match.group(1)


async def test_the_ledger_failure_comes_first_and_loud(client: httpx.AsyncClient, anomalies: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/anomalies")
    assert page.status_code == 200
    assert kinds_in(page.text) == ["LEDGER_INVARIANT", "UNRECONCILED", "USAGE_SPIKE"]
    assert "The ledger fails its own checks." in page.text
    assert 'class="severity-critical anomaly-ledger"' in page.text
    assert "Acknowledge" not in page.text, "support reads anomalies; finance acts on them"


async def test_filters_work_without_javascript_and_as_an_htmx_fragment(
    client: httpx.AsyncClient, anomalies: None
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    high = await client.get("/console/anomalies", params={"severity": "HIGH"})
    assert kinds_in(high.text) == ["UNRECONCILED"] and "<form" in high.text
    dated = await client.get("/console/anomalies", params={"from": "2026-03-11", "to": "2026-03-11"})
    assert kinds_in(dated.text) == ["USAGE_SPIKE"]
    fragment = await client.get("/console/anomalies", params={"kind": "USAGE_SPIKE"}, headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="anomaly-results">') and "<html" not in fragment.text
    assert kinds_in(fragment.text) == ["USAGE_SPIKE"] and "HX-Request" in fragment.headers["vary"]
    assert 'href="/console/anomalies.csv?kind=USAGE_SPIKE"' in fragment.text
    bad = await client.get("/console/anomalies", params={"from": "last week", "kind": "NOT_A_KIND"})
    assert bad.status_code == 200 and "give a date as YYYY-MM-DD" in bad.text and len(kinds_in(bad.text)) == 3
    nothing = await client.get("/console/anomalies", params={"status": "RESOLVED"})
    assert "Nothing looks wrong with these filters." in nothing.text


async def test_finance_acknowledges_and_resolves_with_a_note(client: httpx.AsyncClient, anomalies: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get("/console/anomalies", params={"kind": "USAGE_SPIKE"})
    spike, token = row_id(page.text, "USAGE_SPIKE"), csrf_of(page.text)

    refused = await client.post(f"/console/anomalies/{spike}/acknowledge", data={"back": "kind=USAGE_SPIKE"})
    assert refused.status_code == 403, "no CSRF token, no change"
    acknowledged = await client.post(
        f"/console/anomalies/{spike}/acknowledge", data={"csrftoken": token, "back": "kind=USAGE_SPIKE"}
    )
    assert acknowledged.status_code == 303
    assert acknowledged.headers["location"] == "/console/anomalies?kind=USAGE_SPIKE&notice=Acknowledged"
    after = await client.get(acknowledged.headers["location"])
    assert "status-acknowledged" in after.text and "by staff:fin@example.com" in after.text
    assert f"/console/anomalies/{spike}/acknowledge" not in after.text

    blank = await client.post(
        f"/console/anomalies/{spike}/resolve", data={"csrftoken": token, "back": "kind=USAGE_SPIKE", "note": " "}
    )
    assert blank.status_code == 422
    assert "say what was found or done: a resolution needs a note" in blank.text
    resolved = await client.post(
        f"/console/anomalies/{spike}/resolve",
        data={"csrftoken": token, "back": "kind=USAGE_SPIKE", "note": "a load test, agreed with the customer"},
    )
    assert resolved.status_code == 303
    done = await client.get("/console/anomalies", params={"status": "RESOLVED"})
    assert kinds_in(done.text) == ["USAGE_SPIKE"] and "Resolved: a load test, agreed with the customer" in done.text

    again = await client.post(
        f"/console/anomalies/{spike}/resolve", data={"csrftoken": token, "back": "", "note": "twice"}
    )
    assert again.status_code == 422 and "this anomaly is already resolved" in again.text


async def test_csv_exports_the_filtered_table(client: httpx.AsyncClient, anomalies: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    everything = await client.get("/console/anomalies.csv")
    assert everything.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(everything.text)))
    assert [r["kind"] for r in rows] == ["LEDGER_INVARIANT", "UNRECONCILED", "USAGE_SPIKE"]
    assert rows[1]["customer"] == "org_acme" and rows[0]["customer"] == ""
    assert rows[2]["summary"] == "calls on 2026-03-11: 40 call, 4x the 14-day median of 10"
    assert rows[2]["numbers"] == '{"ratio": "4"}' and rows[2]["status"] == "OPEN"
    filtered = await client.get("/console/anomalies.csv", params={"customer": "ignored", "severity": "CRITICAL"})
    assert [r["kind"] for r in csv.DictReader(io.StringIO(filtered.text))] == ["LEDGER_INVARIANT"]
