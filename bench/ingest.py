"""Ingestion over HTTP: 1,000 customers, batches of 1,000 events from concurrent clients, 10%
duplicates and 1% invalid events, against a raw COPY of the same rows in the same run.

    .venv/bin/python bench/ingest.py [--batches 120] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import libpq_url
from bench._database import scratch_database
from bench._server import cli, running_server

CUSTOMERS = 1000
BATCH = 1000
CATALOG = Path(__file__).resolve().parents[1] / "app" / "demo" / "catalog.toml"


def make_batches(count: int, rng: random.Random) -> list[list[dict]]:
    now = datetime.now(UTC)
    batches, sent_ids, serial = [], [], 0
    for _ in range(count):
        batch = []
        for _ in range(BATCH):
            roll = rng.random()
            if roll < 0.10 and sent_ids:
                event = dict(rng.choice(sent_ids))  # a retry: same id (and payload)
            else:
                serial += 1
                customer = f"bench_{rng.randrange(CUSTOMERS)}"
                at = (now - timedelta(seconds=rng.randrange(3600))).isoformat()
                if rng.random() < 0.5:
                    event = {
                        "id": f"ev-{serial}",
                        "customer": customer,
                        "type": "request.completed",
                        "timestamp": at,
                        "properties": {"model": rng.choice(["fast-1", "large-1"])},
                    }
                else:
                    event = {
                        "id": f"ev-{serial}",
                        "customer": customer,
                        "type": "llm.tokens",
                        "timestamp": at,
                        "properties": {"model": rng.choice(["fast-1", "large-1"]), "tokens": rng.randrange(1, 9000)},
                    }
                if roll > 0.99:
                    event["properties"] = {"model": "fast-1", "tokens": "not a number"}
                    event["type"] = "llm.tokens"
                else:
                    sent_ids.append(event)
            batch.append(event)
        batches.append(batch)
    return batches


async def send_all(base_url: str, token: str, bodies: list[bytes], clients: int) -> tuple[float, list[float], int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as http:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                accepted += response.json()["accepted"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, accepted


def rolled_up_after(url: str) -> float:
    """Seconds until the server's roller has folded every counted measurement into the rollups:
    work deferred past the last answer, so the sustained rate includes it."""
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        while connection.execute("SELECT EXISTS (SELECT FROM usage_pending)").fetchone() != (False,):
            time.sleep(0.05)
    return time.perf_counter() - started


def raw_copy_rate(url: str, batches: list[list[dict]]) -> float:
    rows = [e for batch in batches for e in batch]
    customer = uuid.uuid4()
    received = datetime.now(UTC)
    with psycopg.connect(libpq_url(url)) as connection:
        connection.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS copy_baseline (event_id text, customer_id uuid, event_type text, "
            "occurred_at timestamptz, properties jsonb, received_at timestamptz)"
        )
        started = time.perf_counter()
        with connection.cursor().copy("COPY copy_baseline FROM STDIN") as copy:
            for e in rows:
                copy.write_row((e["id"], customer, e["type"], e["timestamp"], json.dumps(e["properties"]), received))
        connection.commit()
        return len(rows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=120)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="tally serve --workers")
    args = parser.parse_args()
    rng = random.Random(1)
    batches = make_batches(args.batches, rng)
    bodies = [json.dumps(batch).encode() for batch in batches]
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as url:
        cli(url, Path(data_dir), "catalog", "apply", str(CATALOG))
        with (
            psycopg.connect(libpq_url(url)) as connection,
            connection.cursor().copy(
                "COPY customers (id, external_id, name, currency, status, created_at) FROM STDIN"
            ) as copy,
        ):
            for index in range(CUSTOMERS):
                copy.write_row((uuid.uuid4(), f"bench_{index}", f"Bench {index}", "USD", "ACTIVE", datetime.now(UTC)))
        token = cli(url, Path(data_dir), "token", "create", "--role", "ingest")
        with running_server(url, Path(data_dir), "--workers", str(args.workers), TALLY_TRACING="false") as base_url:
            asyncio.run(send_all(base_url, token, bodies[:2], 1))  # warm up: connections, caches
            seconds, latencies, accepted = asyncio.run(send_all(base_url, token, bodies[2:], args.clients))
            drain = rolled_up_after(url)
        events = (len(bodies) - 2) * BATCH
        rate = accepted / seconds
        sustained = accepted / (seconds + drain)
        baseline = raw_copy_rate(url, batches)
        latencies.sort()
        print(
            f"ingest over HTTP: {events:,} events in {len(bodies) - 2} batches of {BATCH} from {args.clients} clients, "
            f"tally serve --workers {args.workers}"
        )
        print(
            f"  accepted {accepted:,} in {seconds:.1f} s = {rate:,.0f} accepted events/s "
            f"({events / seconds:,.0f} events/s handled incl. duplicates and rejects)"
        )
        print(
            f"  batch latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms"
        )
        print(
            f"  the server's roller had folded everything into the rollups {drain:.1f} s after the last batch: "
            f"{sustained:,.0f} accepted and rolled-up events/s"
        )
        print(f"  raw COPY baseline (same rows, unindexed table): {baseline:,.0f} rows/s")
        print(f"  ratio accepted/COPY: {rate / baseline:.3f} (goal ≥ 0.13, i.e. ≥ 25,000 accepted events/s)")


if __name__ == "__main__":
    main()
