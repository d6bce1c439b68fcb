"""Usage queries over many stored events: CustomerUsage over HTTP and the REST entitlement,
against the same rollup query in raw SQL in the same run.

    .venv/bin/python bench/usage_query.py [--events 10000000] [--customers 1000]

Events and their rollups are generated in SQL (this measures reading, not ingestion; see
bench/ingest.py for that). The server is an API process for the edge (`tally serve --no-jobs`):
its jobs, the anomaly scan and the accuracy check over the 10 million events first of all, would
otherwise run in the process being measured as it starts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import libpq_url
from bench._database import derive_daily_rollups, rollup_aggregation, scratch_database
from bench._server import cli, running_server

SERVE_ARGS = ("--no-jobs",)
CATALOG = Path(__file__).resolve().parents[1] / "app" / "demo" / "catalog.toml"
USAGE = """query CustomerUsage($externalId: String!) { customer(externalId: $externalId) { id
  usage { meter { key name unit } quantity included limit remaining cost { amount currency }
          byDimension { dimensions quantity cost { amount currency } } } } }"""


def load(url: str, events: int, customers: int) -> tuple[list[str], datetime]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=30)
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO customers (id, external_id, name, currency, status, created_at) "
            "SELECT gen_random_uuid(), 'load_' || n, 'Load ' || n, 'USD', 'ACTIVE', %s FROM generate_series(0, %s) n",
            (start, customers - 1),
        )
        pro = connection.execute(
            "SELECT v.id FROM plan_versions v JOIN plans p ON p.id = v.plan_id WHERE p.key = 'pro'"
        ).fetchone()
        assert pro is not None
        connection.execute(
            "INSERT INTO subscriptions (id, customer_id, plan_version_id, started_at, created_at, billing_anchor) "
            "SELECT gen_random_uuid(), id, %s, %s, %s, %s FROM customers",
            (pro[0], start, start, start),
        )
        started = time.perf_counter()
        connection.execute(
            """
            INSERT INTO events (event_id, customer_id, event_type, occurred_at, properties, received_at)
            SELECT 'load-' || n, c.id,
                   CASE WHEN n %% 2 = 0 THEN 'request.completed' ELSE 'llm.tokens' END,
                   %(start)s + (n %% 2592000) * interval '1 second',
                   jsonb_build_object('model', CASE WHEN n %% 3 = 0 THEN 'large-1' ELSE 'fast-1' END,
                                      'tokens', n %% 5000),
                   %(start)s + (n %% 2592000) * interval '1 second'
            FROM generate_series(0, %(events)s - 1) n
            JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS position FROM customers) c
              ON c.position = n %% %(customers)s
        """,
            {"start": start, "events": events, "customers": customers},
        )
        connection.execute("""
            INSERT INTO usage_rollups (customer_id, meter_id, hour, dimensions, event_count, value_sum, value_max,
                                       latest_value, latest_at, latest_event_id)
            SELECT e.customer_id, m.id, date_trunc('hour', e.occurred_at, 'UTC'),
                   jsonb_build_object('model', e.properties->'model'), count(*),
                   CASE WHEN m.aggregation = 'sum' THEN sum((e.properties->>'tokens')::numeric) END,
                   CASE WHEN m.aggregation = 'sum' THEN max((e.properties->>'tokens')::numeric) END,
                   NULL, max(e.occurred_at), max(e.event_id)
            FROM events e JOIN meters m ON m.event_type = e.event_type
            GROUP BY 1, 2, 3, 4, m.aggregation
        """)
        derive_daily_rollups(connection)
        connection.execute("ANALYZE")
        print(
            f"loaded {events:,} events for {customers:,} customers and their rollups "
            f"in {time.perf_counter() - started:.0f} s"
        )
    return [f"load_{n}" for n in range(customers)], start


def timed(calls: int, call) -> list[float]:  # type: ignore[no-untyped-def]
    durations = []
    for index in range(calls):
        started = time.perf_counter()
        call(index)
        durations.append(time.perf_counter() - started)
    return sorted(durations)


def describe(name: str, durations: list[float]) -> str:
    return (
        f"  {name}: p50 {statistics.median(durations) * 1000:.2f} ms, "
        f"p99 {durations[int(0.99 * (len(durations) - 1))] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as url:
        cli(url, Path(data_dir), "catalog", "apply", str(CATALOG))
        external_ids, start = load(url, args.events, args.customers)
        token = cli(url, Path(data_dir), "token", "create", "--role", "admin")
        picks = [rng.choice(external_ids) for _ in range(args.requests)]
        with psycopg.connect(libpq_url(url)) as connection:
            ids = dict(connection.execute("SELECT external_id, id FROM customers").fetchall())
            end = datetime.now(UTC) + timedelta(hours=1)
            raw = timed(args.requests, lambda i: rollup_aggregation(connection, ids[picks[i]], start, end))
        with (
            running_server(url, Path(data_dir), *SERVE_ARGS, TALLY_TRACING="false") as base_url,
            httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        ):
            for i in range(20):  # warm up
                http.post("/graphql", json={"query": USAGE, "variables": {"externalId": picks[i]}})
            usage = timed(
                args.requests,
                lambda i: http.post(
                    "/graphql", json={"query": USAGE, "variables": {"externalId": picks[i]}}
                ).raise_for_status(),
            )
            entitlement = timed(
                args.requests, lambda i: http.get(f"/v1/customers/{picks[i]}/entitlements/requests").raise_for_status()
            )
        print(f"usage queries, {args.requests} each, over {args.events:,} stored events:")
        print(describe("raw SQL rollup query (baseline)", raw))
        print(describe("CustomerUsage over HTTP (goal p99 < 20 ms)", usage))
        print(describe("REST entitlement over HTTP (goal p99 < 5 ms)", entitlement))
        print(f"  ratio CustomerUsage/raw (median): {statistics.median(usage) / statistics.median(raw):.1f}x")


if __name__ == "__main__":
    main()
