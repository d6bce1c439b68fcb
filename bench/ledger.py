"""Ledger throughput: balanced credit consumptions touching 1-3 grants from 8 concurrent workers,
then adjustments that also post to one hot system account, against raw INSERTs of the same
rows in the same run.

Each worker runs what a request does: a session of its own, the service function, a commit.
Besides transactions/s and latencies (noisy on a shared machine), each run prints what varies
little with other load: the CPU time per transaction of this Python process and of the
PostgreSQL server, and the statements sent per transaction (BEGIN and COMMIT included: one
statement is one round trip).

    .venv/bin/python bench/ledger.py [--customers 10000] [--transactions 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import AsyncCursor
from psycopg._connection_base import BaseConnection
from sqlmodel.ext.asyncio.session import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import create_engine, in_transaction, libpq_url, session_factory
from bench._database import scratch_database
from ledger import grants as credit
from ledger import service as ledger
from ledger.verify import verify

WORKERS = 8
NOW = datetime.now(UTC)
statements = 0
Operation = Callable[[AsyncSession, int], Awaitable[None]]


def count_statements() -> None:
    """Count what psycopg sends: every cursor execute (the ORM's, the ledger functions') and
    every BEGIN, COMMIT and ROLLBACK. Each is one round trip (psycopg's executemany
    pipelines its rows into one)."""
    execute = AsyncCursor.execute
    executemany = AsyncCursor.executemany
    exec_command = BaseConnection._exec_command

    async def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        global statements
        statements += 1
        return await execute(self, *args, **kwargs)

    async def counted_executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        global statements
        statements += 1
        return await executemany(self, *args, **kwargs)

    def counted_exec_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        global statements
        statements += 1
        return exec_command(self, *args, **kwargs)

    AsyncCursor.execute = counted_execute  # type: ignore[method-assign]
    AsyncCursor.executemany = counted_executemany  # type: ignore[method-assign]
    BaseConnection._exec_command = counted_exec_command  # type: ignore[method-assign]


async def seed(sessions, customers: list[uuid.UUID]) -> None:  # type: ignore[no-untyped-def]
    """Two small grants that expire and one large never-expiring grant per customer: a consumption
    of 50,000-250,000 draws one to three of them, and the large one never runs dry."""
    grants = [(0, 100_000, NOW + timedelta(days=30)), (0, 100_000, NOW + timedelta(days=31)), (1, 10**12, None)]
    async with sessions() as session:
        for index, customer in enumerate(customers):
            for number, (priority, amount, expires_at) in enumerate(grants):
                await credit.grant_credits(
                    session,
                    customer_id=customer,
                    currency="USD",
                    amount=amount,
                    reason="bench",
                    actor="bench",
                    idempotency_key=f"seed-{customer}-{number}",
                    as_of=NOW,
                    priority=priority,
                    expires_at=expires_at,
                )
            if index % 500 == 499:
                await session.commit()
        await session.commit()


@dataclass
class Costs:
    python_cpu: float
    server_cpu: float
    statements: int


class Meter:
    """CPU time of this process and of the PostgreSQL server (the postmaster and its backends)."""

    def __init__(self, backend_pid: int) -> None:
        self.postmaster = psutil.Process(backend_pid).parent()

    def server_cpu(self) -> float:
        total = 0.0
        for process in [self.postmaster, *self.postmaster.children()]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    @contextmanager
    def measure(self) -> Iterator[Costs]:
        costs = Costs(0.0, 0.0, 0)
        python, server, sent = time.process_time(), self.server_cpu(), statements
        yield costs
        costs.python_cpu = time.process_time() - python
        costs.server_cpu = self.server_cpu() - server
        costs.statements = statements - sent


async def run_workers(
    meter: Meter, count: int, work: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float], Costs]:
    latencies: list[float] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            number = queue.pop()
            started = time.perf_counter()
            await work(number)
            latencies.append(time.perf_counter() - started)

    with meter.measure() as costs:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        elapsed = time.perf_counter() - started
    return elapsed, sorted(latencies), costs


def report(name: str, count: int, seconds: float, latencies: list[float], costs: Costs) -> float:
    rate = count / seconds
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    print(f"  {name}: {rate:,.0f} transactions/s, p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99:.1f} ms")
    print(
        f"    per transaction: {costs.python_cpu / count * 1e6:,.0f} µs CPU in Python, "
        f"{costs.server_cpu / count * 1e6:,.0f} µs CPU in PostgreSQL, {costs.statements / count:.2f} statements"
    )
    return rate


GRANTS_TOUCHED = """
SELECT touched, count(*) FROM (
  SELECT count(*) FILTER (WHERE p.grant_id IS NOT NULL) AS touched
  FROM ledger_transactions t JOIN ledger_postings p ON p.transaction_id = t.id
  WHERE t.kind = 'credit_consumption' GROUP BY t.id
) AS consumption GROUP BY touched ORDER BY touched
"""


WRITTEN = "SELECT kind, count(*) FROM ledger_transactions GROUP BY kind ORDER BY kind"


async def main_async(url: str, customer_count: int, count: int) -> None:
    engine = create_engine(url)
    sessions = session_factory(engine)
    customers = [uuid.uuid4() for _ in range(customer_count)]
    started = time.perf_counter()
    await seed(sessions, customers)
    print(f"seeded {customer_count:,} customers with 3 grants each in {time.perf_counter() - started:.0f} s")
    rng = random.Random(5)

    async def consume(session: AsyncSession, number: int) -> None:
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

    async def adjust(session: AsyncSession, number: int) -> None:
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

    def per_transaction(operation: Operation) -> Callable[[int], Awaitable[None]]:
        """A session of its own for each transaction, committed by ``in_transaction`` (with its
        deadlock retries): what a GraphQL mutation, a job and the billing run do."""

        async def work(number: int) -> None:
            async with sessions() as session:
                await in_transaction(session, lambda: operation(session, number))

        return work

    held: list[AsyncSession] = []

    def held_session(operation: Operation) -> Callable[[int], Awaitable[None]]:
        """One session per worker, bound to a connection the worker keeps: the same service call
        and commit, without the ORM session's and the pool's cost per transaction (its keys follow
        the first mode's)."""

        async def work(number: int) -> None:
            session = held.pop()
            try:
                await in_transaction(session, lambda: operation(session, count + number))
            finally:
                held.append(session)

        return work

    connections = [await psycopg.AsyncConnection.connect(libpq_url(url)) for _ in range(WORKERS)]
    for connection in connections:
        await connection.execute("CREATE TABLE IF NOT EXISTS raw_tx (id uuid, reason text)")
        await connection.execute("CREATE TABLE IF NOT EXISTS raw_posting (tx uuid, account uuid, amount bigint)")
        await connection.commit()
    free = list(connections)
    backend = await (await connections[0].execute("SELECT pg_backend_pid()")).fetchone()
    await connections[0].commit()
    assert backend is not None
    meter = Meter(backend[0])
    count_statements()

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
    baseline = report("raw INSERTs of the same rows (baseline)", count, *await run_workers(meter, count, raw))
    rates = {}
    for mode, label in (
        (per_transaction, "a session per transaction"),
        (held_session, "a session held by each worker"),
    ):
        print(f" {label}:")
        held_connections = [await engine.connect() for _ in range(WORKERS if mode is held_session else 0)]
        held[:] = [AsyncSession(bind=connection, expire_on_commit=False) for connection in held_connections]
        rates[mode, consume] = report(
            "credit consumptions (1-3 grants, customer accounts)",
            count,
            *await run_workers(meter, count, mode(consume)),
        )
        rates[mode, adjust] = report(
            "adjustments (customer receivable + one hot system account)",
            count,
            *await run_workers(meter, count, mode(adjust)),
        )
        for session in held:
            await session.close()
        for connection in held_connections:
            await connection.close()
        print(
            f"  ratio to raw INSERTs: consumption {rates[mode, consume] / baseline:.2f}, "
            f"with the hot account {rates[mode, adjust] / baseline:.2f}"
        )
    touched = await (await connections[0].execute(GRANTS_TOUCHED)).fetchall()
    print(" consumptions by grants drawn: " + ", ".join(f"{n} grant(s) {found:,}" for n, found in touched))
    kinds = await (await connections[0].execute(WRITTEN)).fetchall()
    print(" committed: " + ", ".join(f"{kind} {found:,}" for kind, found in kinds))
    async with sessions() as session:
        violations = await verify(session)
    print(f" ledger verify: {len(violations)} violations" + "".join(f"\n  {v}" for v in violations[:10]))
    print(" goals: ≥ 3,000/s, ≥ 1,500/s with the hot account, p99 < 50 ms")
    for connection in connections:
        await connection.close()
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--transactions", type=int, default=8_000)
    args = parser.parse_args()
    with scratch_database() as url:
        asyncio.run(main_async(url, args.customers, args.transactions))


if __name__ == "__main__":
    main()
