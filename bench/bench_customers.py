"""Customers: creating them through the service and searching them through GraphQL,
each against a raw-SQL baseline run in the same process on the same database."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.context import TallyContext
from app.api.schema import build_schema
from app.auth import Role, Viewer
from app.database import create_engine, libpq_url, session_factory
from app.settings import Settings
from bench._database import scratch_database
from customers.service import NewCustomer, create_customer

SERVICE_ROWS = 2_000
COPY_ROWS = 100_000
SEARCHES = 300
SEARCH = """query($s: String, $after: String) { customers(search: $s, first: 25, after: $after) {
  edges { node { id externalId name status subscription { plan { key } } } } pageInfo { hasNextPage endCursor } } }"""
RAW_SEARCH = """SELECT c.id, c.external_id, c.name, c.status, s.plan_version_id FROM customers c
  LEFT JOIN subscriptions s ON s.customer_id = c.id
  WHERE (external_id || ' ' || name || ' ' || coalesce(email, '')) ILIKE %s
  ORDER BY c.created_at DESC, c.id DESC LIMIT 26"""


def copy_customers(url: str, rows: int) -> float:
    started = time.perf_counter()
    now = datetime.now(UTC)
    with (
        psycopg.connect(libpq_url(url)) as connection,
        connection.cursor() as cursor,
        cursor.copy("COPY customers (id, external_id, name, email, currency, status, created_at) FROM STDIN") as copy,
    ):
        for index in range(rows):
            copy.write_row(
                (
                    uuid.uuid4(),
                    f"copy_{index}",
                    f"Copied Company {index}",
                    f"billing{index}@copied.example",
                    "USD",
                    "ACTIVE",
                    now,
                )
            )
    return time.perf_counter() - started


async def service_customers(url: str, rows: int) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    async with session_factory(engine)() as session:
        for index in range(rows):
            await create_customer(
                session,
                NewCustomer(external_id=f"svc_{index}", name=f"Service Co {index}", currency="USD"),
                as_of=datetime.now(UTC),
            )
            if index % 500 == 499:
                await session.commit()
        await session.commit()
    await engine.dispose()
    return time.perf_counter() - started


async def graphql_searches(url: str, terms: list[str]) -> list[float]:
    engine = create_engine(url)
    schema = build_schema(Settings(tracing=False))
    timings = []
    async with session_factory(engine)() as session:
        context = TallyContext(session=session, viewer=Viewer(Role.ADMIN, "bench"), settings=Settings(tracing=False))
        for term in terms:
            started = time.perf_counter()
            result = await schema.execute(SEARCH, variable_values={"s": term}, context_value=context)
            timings.append(time.perf_counter() - started)
            assert not result.errors, result.errors
    await engine.dispose()
    return timings


def raw_searches(url: str, terms: list[str]) -> list[float]:
    timings = []
    # No server-side prepared statements: a generic plan cannot use the trigram index.
    with psycopg.connect(libpq_url(url), prepare_threshold=None) as connection:
        for term in terms:
            started = time.perf_counter()
            connection.execute(RAW_SEARCH, (f"%{term}%",)).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


def percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] * 1000


def main() -> None:
    with scratch_database() as url:
        copy_seconds = copy_customers(url, COPY_ROWS)
        service_seconds = asyncio.run(service_customers(url, SERVICE_ROWS))
        copy_rate, service_rate = COPY_ROWS / copy_seconds, SERVICE_ROWS / service_seconds
        print(
            f"load: COPY {copy_rate:,.0f} customers/s (baseline); create_customer {service_rate:,.0f}/s; "
            f"ratio {service_rate / copy_rate:.3f}"
        )
        with psycopg.connect(libpq_url(url), autocommit=True) as connection:
            connection.execute("ANALYZE customers")  # as autovacuum would after a bulk load
        terms = [f"company {10_000 + i * 271 % 90_000}" for i in range(SEARCHES)]  # specific, as typed
        raw = raw_searches(url, terms)
        api = asyncio.run(graphql_searches(url, terms))
        print(f"search over {COPY_ROWS + SERVICE_ROWS:,} customers, {SEARCHES} queries:")
        print(f"  raw SQL (baseline): p50 {percentile(raw, 0.5):.2f} ms  p95 {percentile(raw, 0.95):.2f} ms")
        print(f"  GraphQL customers:  p50 {percentile(api, 0.5):.2f} ms  p95 {percentile(api, 0.95):.2f} ms")
        print(f"  ratio (GraphQL / raw, median): {statistics.median(api) / statistics.median(raw):.1f}x")


if __name__ == "__main__":
    main()
