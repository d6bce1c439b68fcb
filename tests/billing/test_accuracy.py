"""Invoice accuracy: issued invoices re-rated from the raw events alone. An untouched invoice (late
usage included) verifies clean; rollups that drifted from the events, or an event stored without
reaching the rollups, are reported on the metric, as an anomaly and by `tally invoices verify`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner, Result

from app.billing_run import run_billing
from app.cli import cli
from app.jobs import verify_invoice_accuracy
from app.metrics import REGISTRY
from app.settings import Settings
from app.telemetry import configure_metrics
from billing.insights.accuracy import verify_invoices
from metering.service import roll_up
from tests.app.test_metrics import parse, value
from tests.billing.scenario import FEB_28, JAN_31, MAR_31, send_calls, subscribe

AFTER_MARCH = MAR_31 + timedelta(hours=1)


async def test_untouched_invoices_verify_clean_late_usage_included(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    # Late February calls, after February was invoiced: billed by March's invoice, not February's.
    await send_calls(session, "acme", 30, datetime(2026, 2, 20, tzinfo=UTC), received=datetime(2026, 3, 5, tzinfo=UTC))
    await send_calls(session, "acme", 10, datetime(2026, 3, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=AFTER_MARCH)

    report = await verify_invoices(session, sample=10, as_of=AFTER_MARCH)

    assert [check.invoice.period_start for check in report.checked] == [JAN_31, FEB_28]
    assert (report.differences, report.anomalies_raised) == (0, 0)
    anomalies = await session.execute(text("SELECT count(*) FROM anomalies"))
    assert anomalies.scalar_one() == 0


async def test_rollups_that_drifted_from_the_events_are_an_anomaly_and_a_metric(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await roll_up(session)
    for rollups in ("usage_rollups", "usage_daily_rollups"):
        await session.execute(text(f"UPDATE {rollups} SET event_count = event_count + 5"))
    await session.commit()
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    configure_metrics(Settings())

    report = await verify_invoice_accuracy(sessions, settings, sample=10, as_of=AFTER_MARCH)

    [check] = report.checked
    [difference] = check.differences
    assert difference.description == "API calls (region=eu)"
    assert (difference.billed_quantity, difference.rerated_quantity) == (155, 150)
    assert (difference.billed_amount, difference.rerated_amount) == (Decimal("5.5"), Decimal("5"))
    assert value(parse(generate_latest(REGISTRY).decode()), "tally_invoice_accuracy_differences") == 1
    row = (await session.execute(text("SELECT kind, customer_id, severity, summary, numbers FROM anomalies"))).one()
    assert (row.kind, row.customer_id, row.severity) == ("INVOICE_ACCURACY", customer_id, "high")
    assert row.summary.endswith("differs from its raw events on 1 line(s)")
    assert row.numbers["lines"][0]["billed_quantity"] == "155"
    again = await verify_invoice_accuracy(sessions, settings, sample=10, as_of=AFTER_MARCH)
    assert (again.differences, again.anomalies_raised) == (1, 0), "found again, stored once"


async def test_an_event_stored_without_reaching_the_rollups_is_reported_by_the_cli(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    database_url: str,
    tmp_path: Path,
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 150, datetime(2026, 2, 10, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    env = {"DATABASE_URL": database_url, "TALLY_DATA_DIR": str(tmp_path / "data")}

    def tally(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    # The CLI runs its own event loop: in a thread, beside the test's.
    clean = await asyncio.to_thread(tally, "invoices", "verify")
    assert clean.exit_code == 0, clean.output
    assert "1 invoice(s) re-rated from raw events: 0 line(s) differ" in clean.stdout
    # Received (and so billable) before the invoice, but it never reached the rollups.
    await session.execute(
        text(
            "INSERT INTO events (event_id, customer_id, event_type, occurred_at, properties, received_at) "
            "VALUES ('silent', :customer_id, 'api.call', '2026-02-11T00:00:00Z', '{\"region\": \"eu\"}', "
            "'2026-02-11T00:01:00Z')"
        ),
        {"customer_id": customer_id},
    )
    await session.commit()

    reported = await asyncio.to_thread(tally, "invoices", "verify", "--sample", "5", "--json")

    assert reported.exit_code == 1
    document = json.loads(reported.stdout)
    assert (document["checked"], document["differences"], document["anomaliesRaised"]) == (1, 1, 1)
    [invoice] = document["invoices"]
    assert invoice["differences"][0]["billed_quantity"] == "150"
    assert invoice["differences"][0]["rerated_quantity"] == "151"
    assert "Usage:" in tally("invoices", "verify", "--help").stdout
