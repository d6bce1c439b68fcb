"""One customer's failure never stops billing for the others: a customer whose stored usage is
poisoned (written straight into the database, past every check at ingestion) fails alone, is
recorded, shown to finance as a BILLING_FAILED anomaly and on /metrics, retried with backoff, and
billed once the data is repaired; every other due customer is billed in the same run."""

from __future__ import annotations

import html
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from app.billing_run import run_billing
from app.cli import BILLING_INCOMPLETE, cli
from app.metrics import refresh_gauges
from app.settings import Settings
from app.staff import create_user
from tests.app.test_metrics import parse, value
from tests.billing.scenario import FEB_28, JAN_31, invoices_of, send_calls, subscribe
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in

CLOSED = FEB_28 + timedelta(hours=1)
HUGE_COUNT = 2**63 - 1  # a rollup's count at BIGINT's limit: rated at 0.10 a call, beyond what a ledger amount holds


async def poison(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """A daily rollup of February 10 whose count no real ingestion could make."""
    await session.execute(
        text(
            "INSERT INTO usage_daily_rollups (customer_id, meter_id, day, dimensions, event_count, latest_at, "
            "latest_event_id) SELECT :customer_id, id, :day, '{\"region\": \"eu\"}', :count, :day, 'poison' "
            "FROM meters WHERE key = 'calls'"
        ),
        {"customer_id": customer_id, "day": datetime(2026, 2, 10, tzinfo=UTC), "count": HUGE_COUNT},
    )
    await session.commit()


async def cure(session: AsyncSession) -> None:
    await session.execute(text("DELETE FROM usage_daily_rollups WHERE latest_event_id = 'poison'"))
    await session.commit()


async def customers_billed(session: AsyncSession, customers: dict[str, uuid.UUID]) -> dict[str, list[str]]:
    return {name: [i.kind for i in await invoices_of(session, cid)] for name, cid in customers.items()}


async def billing_failed_anomalies(session: AsyncSession) -> list[tuple[uuid.UUID, str, str | None]]:
    rows = await session.execute(
        text("SELECT customer_id, status, note FROM anomalies WHERE kind = 'BILLING_FAILED' ORDER BY detected_at")
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_poisoned_customer_fails_alone_and_every_other_due_customer_is_billed(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    client: httpx.AsyncClient,
) -> None:
    customers = {f"c{i}": await subscribe(session, f"c{i}", "basic", JAN_31) for i in range(5)}
    for name in customers:
        await send_calls(session, name, 3, datetime(2026, 2, 10, 12, tzinfo=UTC))
    poisoned = customers["c2"]
    await poison(session, poisoned)
    before = parse((await client.get("/metrics")).text)

    report = await run_billing(sessions, settings, as_of=CLOSED)

    assert await customers_billed(session, customers) == {
        "c0": ["opening", "period"],
        "c1": ["opening", "period"],
        "c2": ["opening"],  # its opening invoice is fine; the period that rates the poisoned usage fails
        "c3": ["opening", "period"],
        "c4": ["opening", "period"],
    }
    assert report.invoices_issued == 9 and list(report.failed) == [poisoned] and not report.complete
    failure = (await session.execute(text("SELECT attempts, next_attempt_at, error FROM billing_failures"))).one()
    assert failure.attempts == 1 and failure.next_attempt_at == CLOSED + timedelta(minutes=15)
    assert failure.error == report.failed[poisoned] and failure.error, "the error is kept for finance"
    assert await billing_failed_anomalies(session) == [(poisoned, "open", None)]
    # Finance sees it where they look: the customer's Invoices tab and the Anomalies page.
    await create_user(session, email="fin@example.com", role="finance", password=PASSWORD, as_of=now())
    await session.commit()
    await sign_in(client, "fin@example.com", PASSWORD)
    tab = (await client.get(f"/console/customers/{poisoned}/invoices")).text
    assert 'id="billing-failure"' in tab and failure.error in html.unescape(tab)
    assert 'id="billing-failure"' not in (await client.get(f"/console/customers/{customers['c1']}/invoices")).text
    listed = (await client.get("/console/anomalies?kind=BILLING_FAILED")).text
    assert "BILLING_FAILED" in listed and "could not be issued" in listed
    after = parse((await client.get("/metrics")).text)
    assert value(after, "tally_billing_failures_total") - value(before, "tally_billing_failures_total") == 1
    assert value(after, "tally_billing_customers_failing") == 1
    assert value(after, "tally_anomalies_open", kind="BILLING_FAILED") == 1

    # A minute later the next run leaves the customer alone (backoff) and says so.
    waiting = await run_billing(sessions, settings, as_of=CLOSED + timedelta(minutes=1))
    assert (waiting.invoices_issued, waiting.failed, list(waiting.waiting)) == (0, {}, [poisoned])
    # Once the retry is due it is tried again, fails again, and waits twice as long; one anomaly still.
    again = await run_billing(sessions, settings, as_of=CLOSED + timedelta(minutes=16))
    assert list(again.failed) == [poisoned]
    failure = (await session.execute(text("SELECT attempts, next_attempt_at FROM billing_failures"))).one()
    assert (failure.attempts, failure.next_attempt_at) == (2, CLOSED + timedelta(minutes=16 + 30))
    assert len(await billing_failed_anomalies(session)) == 1, "opened once, however often it fails"

    # The data is repaired; retried at once by hand, the customer is billed and the anomaly resolved.
    await cure(session)
    fixed = await run_billing(sessions, settings, as_of=CLOSED + timedelta(minutes=17), retry_failed=True)
    assert fixed.invoices_issued == 1 and fixed.complete
    assert (await customers_billed(session, customers))["c2"] == ["opening", "period"]
    assert (await session.execute(text("SELECT count(*) FROM billing_failures"))).scalar_one() == 0
    assert await billing_failed_anomalies(session) == [(poisoned, "resolved", "billed after 2 failed attempt(s)")]
    assert (await refresh_gauges(session, as_of=CLOSED)).customers_failing == 0
    assert 'id="billing-failure"' not in (await client.get(f"/console/customers/{poisoned}/invoices")).text


@pytest.fixture
async def one_poisoned_of_three(session: AsyncSession, billing_catalog: None) -> uuid.UUID:
    for name in ("ok1", "bad", "ok2"):
        await subscribe(session, name, "basic", JAN_31)
        await send_calls(session, name, 3, datetime(2026, 2, 10, 12, tzinfo=UTC))
    bad = (await session.execute(text("SELECT id FROM customers WHERE external_id = 'bad'"))).scalar_one()
    await poison(session, bad)
    return uuid.UUID(str(bad))


def test_tally_billing_run_bills_the_others_then_exits_3_naming_how_many_failed(
    one_poisoned_of_three: uuid.UUID, database_url: str, tmp_path: Path
) -> None:
    bad = one_poisoned_of_three
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data"), "TALLY_TRACING": "false"}

    def billing_run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["billing", "run", "--as-of", CLOSED.isoformat(), *args], env=env)

    result = billing_run()
    assert result.exit_code == BILLING_INCOMPLETE == 3, result.output
    assert "5 invoice(s) issued for 3 customer(s)" in result.stdout
    assert "1 customer(s) failed and 0 wait for a retry" in result.stderr
    with psycopg.connect(database_url) as connection:
        billed = connection.execute(
            "SELECT c.external_id, count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id "
            "GROUP BY c.external_id ORDER BY 1"
        ).fetchall()
    assert billed == [("bad", 1), ("ok1", 2), ("ok2", 2)]
    waiting = billing_run("--json")
    assert waiting.exit_code == 3
    report = json.loads(waiting.stdout)
    assert report["customersFailed"] == []
    assert [w["customerId"] for w in report["customersWaitingRetry"]] == [str(bad)]
    with psycopg.connect(database_url) as connection:
        connection.execute("DELETE FROM usage_daily_rollups WHERE latest_event_id = 'poison'")
    done = billing_run("--retry-failed", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["invoicesIssued"] == 1
    assert "Exit codes" in CliRunner().invoke(cli, ["billing", "run", "--help"], env=env).stdout
