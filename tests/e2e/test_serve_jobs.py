"""`tally serve --no-jobs`: an API process for the edge that leaves the background jobs to
another `tally serve`; by default the jobs run, the billing run first of all at start."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from app.database import create_engine, session_factory
from customers.service import NewCustomer, create_customer
from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import TALLY, server_env, start_server


async def _subscribe(url: str) -> None:
    """A customer on Pro from now on: their opening invoice is due at once."""
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        new = NewCustomer(external_id="org_jobs", name="Jobs", currency="USD", plan_key="pro")
        await create_customer(session, new, as_of=datetime.now(UTC))
        await session.commit()
    await engine.dispose()


def _invoices(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM invoices").fetchone()
    assert row is not None
    return int(row[0])


def test_a_server_without_jobs_bills_nothing_and_one_with_jobs_bills_at_start(
    server_url: str, template_url: str, tmp_path: Path
) -> None:
    url = clone_database(server_url, "tally_jobs")
    env = server_env(url, tmp_path)
    catalog = Path(__file__).resolve().parents[2] / "app" / "demo" / "catalog.toml"
    try:
        subprocess.run([str(TALLY), "catalog", "apply", str(catalog)], env=env, check=True, capture_output=True)
        asyncio.run(_subscribe(url))
        api, _ = start_server(env, tmp_path / "api.log", "--no-jobs")
        try:
            time.sleep(3)
            assert _invoices(url) == 0, "no billing run in an API process without jobs"
        finally:
            api.terminate()
            api.wait(timeout=20)
        worker, _ = start_server(env, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 60
            while _invoices(url) == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _invoices(url) == 1, "the opening invoice, issued by the billing run at start"
        finally:
            worker.terminate()
            worker.wait(timeout=20)
    finally:
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_jobs WITH (FORCE)")
