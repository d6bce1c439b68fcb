"""The billing run over many customers, upcomingInvoice over HTTP, and price simulation.

    .venv/bin/python bench/billing_run.py [--customers 10000] [--simulated 1000]

Customers are spread over the demo catalog's three plans, anchored on the same hour ~27 days
ago, with hourly rollups for every hour since on their plan's meters (requests and tokens by
model, active seats) generated in SQL, and credit grants for one in ten. One in eight has a
lifecycle event in the period billed, made through the services as the API makes it: paused, paused
and unpaused, canceled at the period's end, canceled now (its final invoice issued then), or moved
to another plan mid-period. The billing run closes their period (the opening invoices are marked
done) in-process, as `tally billing run` does.
The baseline is the rollup aggregation query every invoice needs, run alone for every customer
in the same process: the ratio shows what rating, the ledger and the invoice rows add.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.billing_run import run_billing
from app.database import create_engine, libpq_url, session_factory
from app.settings import Settings
from bench._database import derive_daily_rollups, rollup_aggregation, scratch_database
from bench._server import cli, running_server
from billing.invoices.plan_changes import change_plan
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from billing.subscriptions.lifecycle import change_lifecycle
from customers.lifecycle import CANCEL, PAUSE, UNPAUSE, LifecycleRequest
from customers.periods import add_months, period_containing
from customers.subscriptions import PlanChangeRequest
from ledger.grants import grant_credits

CATALOG = Path(__file__).resolve().parents[1] / "app" / "demo" / "catalog.toml"
UPCOMING = """query($id: String!) { customer(externalId: $id) { upcomingInvoice {
  total { amount } creditsApplied { amount } lines { description quantity amount { amount } } } } }"""


def load(url: str, customers: int, anchor: datetime, usage_end: datetime) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute(
            "INSERT INTO customers (id, external_id, name, currency, status, created_at) "
            "SELECT gen_random_uuid(), 'bill_' || n, 'Bill ' || n, 'USD', 'ACTIVE', %s "
            "FROM generate_series(0, %s) n",
            (anchor, customers - 1),
        )
        # Plans by number: 0 hobby, 1 pro, 2 team. Opening invoices count as issued already.
        connection.execute(
            """
            INSERT INTO subscriptions (id, customer_id, plan_version_id, started_at, created_at, invoiced_through,
                                       billing_anchor)
            SELECT gen_random_uuid(), c.id, v.id, %(anchor)s, %(anchor)s, %(anchor)s, %(anchor)s
            FROM customers c
            JOIN plans p ON p.key = (ARRAY['hobby', 'pro', 'team'])[split_part(c.external_id, '_', 2)::int %% 3 + 1]
            JOIN plan_versions v ON v.plan_id = p.id
            """,
            {"anchor": anchor},
        )
        connection.execute(
            "INSERT INTO subscription_phases (subscription_id, customer_id, starts_at, plan_version_id, "
            "billing_anchor) SELECT id, customer_id, started_at, plan_version_id, billing_anchor FROM subscriptions"
        )
        connection.execute(
            """
            INSERT INTO usage_rollups (customer_id, meter_id, hour, dimensions, event_count, value_sum, value_max,
                                       latest_value, latest_at, latest_event_id)
            SELECT s.customer_id, m.id, h, jsonb_build_object('model', model), 8 + extract(hour FROM h)::int %% 7,
                   CASE WHEN m.aggregation = 'sum' THEN 9000 + extract(hour FROM h)::int * 100 END,
                   CASE WHEN m.aggregation = 'sum' THEN 1200 END, NULL, h, 'bench'
            FROM subscriptions s
            JOIN plan_versions v ON v.id = s.plan_version_id
            JOIN plans p ON p.id = v.plan_id
            CROSS JOIN generate_series(%(anchor)s, %(end)s - interval '1 hour', interval '1 hour') h
            CROSS JOIN (VALUES ('fast-1'), ('large-1')) models(model)
            JOIN meters m ON m.key = 'requests' OR (m.key = 'tokens' AND p.key = 'pro')
            """,
            {"anchor": anchor, "end": usage_end},
        )
        connection.execute(
            """
            INSERT INTO usage_unique_values (customer_id, meter_id, hour, dimensions, value)
            SELECT s.customer_id, m.id, h, '{}'::jsonb, 'user-' || (extract(hour FROM h)::int %% 12)
            FROM subscriptions s
            JOIN plan_versions v ON v.id = s.plan_version_id
            JOIN plans p ON p.id = v.plan_id AND p.key = 'team'
            CROSS JOIN generate_series(%(anchor)s, %(end)s - interval '1 hour', interval '1 hour') h
            JOIN meters m ON m.key = 'seats'
            """,
            {"anchor": anchor, "end": usage_end},
        )
        derive_daily_rollups(connection)
        connection.execute("ANALYZE")
        rollups = connection.execute("SELECT count(*) FROM usage_rollups").fetchone()
        print(
            f"loaded {customers:,} customers and {rollups[0] if rollups else 0:,} hourly rollups "
            f"in {time.perf_counter() - started:.0f} s"
        )


async def grant_some_credits(url: str, anchor: datetime) -> int:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        query = text("SELECT id FROM customers WHERE split_part(external_id, '_', 2)::int % 10 = 0")
        ids = [row[0] for row in (await (await session.connection()).execute(query)).all()]
        for customer_id in ids:
            await grant_credits(
                session,
                customer_id=customer_id,
                currency="USD",
                amount=1500,
                reason="bench credit",
                actor="bench",
                idempotency_key=f"bench-{customer_id}",
                as_of=anchor,
            )
        await session.commit()
    await engine.dispose()
    return len(ids)


LATE_WINDOW = timedelta(days=35)


async def lifecycle_mix(url: str, as_of: datetime) -> int:
    """One customer in eight changes during the period billed, one committed request each; the
    number of customers changed is returned."""
    engine = create_engine(url)
    changed = 0
    async with session_factory(engine)() as session:
        query = text("SELECT id, split_part(external_id, '_', 2)::int FROM customers ORDER BY 2")
        for customer_id, n in (await (await session.connection()).execute(query)).all():
            turn = n % 40
            requests = {
                2: [(PAUSE, 6, None)],
                7: [(PAUSE, 9, None), (UNPAUSE, 3, None)],
                12: [(CANCEL, None, "PERIOD_END")],
                17: [(CANCEL, 2, "IMMEDIATELY")],
            }.get(turn, [])
            for kind, days_ago, timing in requests:
                at = as_of - timedelta(days=days_ago) if days_ago is not None else None
                request = LifecycleRequest(customer_id, kind, f"bench-{kind}-{n}", actor="bench", timing=timing, at=at)
                await change_lifecycle(session, request, as_of=as_of, late_window=LATE_WINDOW)
                await session.commit()
            if turn == 22:
                plan = "pro" if n % 3 == 0 else "hobby"
                change = PlanChangeRequest(
                    customer_id, plan, "IMMEDIATELY", f"bench-change-{n}", "bench", at=as_of - timedelta(days=7)
                )
                await change_plan(session, change, as_of=as_of)
                await session.commit()
            changed += bool(requests) or turn == 22
    await engine.dispose()
    return changed


def baseline(url: str, anchor: datetime, end: datetime) -> float:
    with psycopg.connect(libpq_url(url)) as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM customers ORDER BY id").fetchall()]
        started = time.perf_counter()
        for customer_id in ids:
            rollup_aggregation(connection, customer_id, anchor, end)
        return len(ids) / (time.perf_counter() - started)


def upcoming_latencies(url: str, data_dir: Path, customers: int, requests: int) -> list[float]:
    token = cli(url, data_dir, "token", "create", "--role", "finance")
    rng = random.Random(5)
    picks = [f"bill_{rng.randrange(customers)}" for _ in range(requests)]
    with (
        running_server(url, data_dir, TALLY_TRACING="false") as base_url,
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
    ):
        for pick in picks[:20]:  # warm up
            http.post("/graphql", json={"query": UPCOMING, "variables": {"id": pick}}).raise_for_status()
        durations = []
        for pick in picks:
            started = time.perf_counter()
            body = http.post("/graphql", json={"query": UPCOMING, "variables": {"id": pick}}).json()
            durations.append(time.perf_counter() - started)
            assert body["data"]["customer"]["upcomingInvoice"], body
    return sorted(durations)


async def bill(url: str, as_of: datetime, concurrency: int) -> tuple[int, float]:
    engine = create_engine(url)
    settings = Settings(database_url=url, tracing=False, billing_concurrency=concurrency)
    report = await run_billing(session_factory(engine), settings, as_of=as_of)
    await engine.dispose()
    return report.invoices_issued, report.seconds


async def simulate(url: str, simulated: int, as_of: datetime) -> tuple[int, int, float]:
    """A 5.00 higher Pro base fee over each of the first ``simulated`` Pro customers' last 3 periods."""
    draft = CATALOG.read_text().replace('base_fee = "20.00"', 'base_fee = "25.00"')
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        pro = [f"bill_{n}" for n in range(1, 3 * simulated, 3)]
        started = time.perf_counter()
        summary = await simulate_pricing(
            session,
            catalog_text=draft,
            selection=PeriodSelection(start=None, end=as_of, last=3),
            as_of=as_of,
            customer_external_ids=pro,
        )
        seconds = time.perf_counter() - started
    await engine.dispose()
    return len(summary.outcomes), sum(o.periods for o in summary.outcomes), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--simulated", type=int, default=1_000, help="Pro customers in the simulation")
    parser.add_argument("--requests", type=int, default=300, help="upcomingInvoice requests")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="customers billed at once (TALLY_BILLING_CONCURRENCY)"
    )
    args = parser.parse_args()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    anchor = now - timedelta(days=27)
    # Two earlier periods exist (no usage in them) so the simulation has three to re-rate.
    started_at = add_months(anchor, -2)
    period_start, period_end = period_containing(started_at, "month", anchor)
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as url:
        cli(url, Path(data_dir), "catalog", "apply", str(CATALOG))
        load(url, args.customers, anchor, now)
        with psycopg.connect(libpq_url(url), autocommit=True) as connection:
            connection.execute(
                "UPDATE subscriptions SET started_at = %s, billing_anchor = %s, invoiced_through = %s",
                (started_at, started_at, period_start),
            )
            connection.execute("UPDATE subscription_phases SET starts_at = %s, billing_anchor = %s", (started_at,) * 2)
        granted = asyncio.run(grant_some_credits(url, anchor))
        rate = baseline(url, anchor, period_end)
        latencies = upcoming_latencies(url, Path(data_dir), args.customers, args.requests)
        changed = asyncio.run(lifecycle_mix(url, now))
        invoices, seconds = asyncio.run(bill(url, period_end + timedelta(hours=1, seconds=1), args.concurrency))
        customers, periods, simulation_seconds = asyncio.run(
            simulate(url, args.simulated, period_end + timedelta(hours=2))
        )
    per_second = invoices / seconds
    print(
        f"billing run over {args.customers:,} customers ({granted:,} with credits, {changed:,} paused, canceled "
        "or moved to another plan in the period), a month of hourly usage:"
    )
    print(f"  rollup query alone (baseline): {rate:,.0f} customers/s")
    print(
        f"  billing run: {invoices:,} invoices in {seconds:.1f} s = {per_second:,.0f} invoices/s "
        f"(goal <= 60 s, >= 170/s); ratio baseline/run {rate / per_second:.1f}x"
    )
    print(
        f"  upcomingInvoice over HTTP, {args.requests} requests: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.1f} ms (goal p99 < 50 ms)"
    )
    print(
        f"  simulatePricing: {customers:,} customers x {periods / max(customers, 1):.0f} periods "
        f"in {simulation_seconds:.1f} s (goal < 10 s)"
    )


if __name__ == "__main__":
    main()
