"""Ledger throughput: balanced credit consumptions touching 1-3 grants from 8 concurrent workers,
then adjustments that also post to one hot system account, against raw INSERTs of the same
rows in the same run.

    .venv/bin/python bench/ledger.py [--customers 2000] [--transactions 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import create_engine, libpq_url, session_factory
from bench._database import scratch_database
from ledger import grants as credit
from ledger import service as ledger

WORKERS = 8
NOW = datetime.now(UTC)


async def seed(sessions, customers: list[uuid.UUID]) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        for index, customer in enumerate(customers):
            for grant in range(3):
                await credit.grant_credits(
                    session,
                    customer_id=customer,
                    currency="USD",
                    amount=100_000,
                    reason="bench",
                    actor="bench",
                    idempotency_key=f"seed-{customer}-{grant}",
                    as_of=NOW,
                    priority=grant,
                    expires_at=NOW + timedelta(days=30 + grant),
                )
            if index % 200 == 199:
                await session.commit()
        await session.commit()


async def run_workers(count: int, work: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            number = queue.pop()
            started = time.perf_counter()
            await work(number)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.perf_counter() - started, sorted(latencies)


def report(name: str, count: int, seconds: float, latencies: list[float]) -> float:
    rate = count / seconds
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    print(f"  {name}: {rate:,.0f} transactions/s, p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99:.1f} ms")
    return rate


async def main_async(url: str, customer_count: int, count: int) -> None:
    engine = create_engine(url)
    sessions = session_factory(engine)
    customers = [uuid.uuid4() for _ in range(customer_count)]
    started = time.perf_counter()
    await seed(sessions, customers)
    print(f"seeded {customer_count:,} customers with 3 grants each in {time.perf_counter() - started:.0f} s")
    rng = random.Random(5)

    async def consume(number: int) -> None:
        async with sessions() as session:
            await credit.consume_credits(
                session,
                customer_id=rng.choice(customers),
                currency="USD",
                amount=rng.randint(50_000, 250_000),
                reason="bench",
                actor="bench",
                idempotency_key=f"consume-{number}",
                as_of=NOW,
            )
            await session.commit()

    async def adjust(number: int) -> None:
        async with sessions() as session:
            await ledger.adjust_balance(
                session,
                customer_id=rng.choice(customers),
                currency="USD",
                amount=rng.randint(1, 10_000),
                reason="bench",
                actor="bench",
                idempotency_key=f"adjust-{number}",
                as_of=NOW,
            )
            await session.commit()

    connections = [await psycopg.AsyncConnection.connect(libpq_url(url)) for _ in range(WORKERS)]
    for connection in connections:
        await connection.execute("CREATE TABLE IF NOT EXISTS raw_tx (id uuid, reason text)")
        await connection.execute("CREATE TABLE IF NOT EXISTS raw_posting (tx uuid, account uuid, amount bigint)")
        await connection.commit()
    free = list(connections)

    async def raw(number: int) -> None:
        connection = free.pop()
        transaction = uuid.uuid4()
        async with connection.cursor() as cursor:
            await cursor.execute("INSERT INTO raw_tx VALUES (%s, 'bench')", (transaction,))
            await cursor.executemany(
                "INSERT INTO raw_posting VALUES (%s, %s, %s)",
                [(transaction, uuid.uuid4(), 100), (transaction, uuid.uuid4(), 100), (transaction, uuid.uuid4(), -200)],
            )
        await connection.commit()
        free.append(connection)

    print(f"{count:,} transactions from {WORKERS} concurrent workers:")
    baseline = report("raw INSERTs of the same rows (baseline)", count, *await run_workers(count, raw))
    consumed = report("credit consumptions (1-3 grants, customer accounts)", count, *await run_workers(count, consume))
    hot = report("adjustments (customer receivable + one hot system account)", count, *await run_workers(count, adjust))
    print(f"  ratio to raw INSERTs: consumption {consumed / baseline:.2f}, with the hot account {hot / baseline:.2f}")
    print("  goals: ≥ 3,000/s, ≥ 1,500/s with the hot account, p99 < 50 ms")
    for connection in connections:
        await connection.close()
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=4000)
    args = parser.parse_args()
    with scratch_database() as url:
        asyncio.run(main_async(url, args.customers, args.transactions))


if __name__ == "__main__":
    main()
