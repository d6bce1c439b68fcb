"""Usage authorizations (`POST /v1/customers/{id}/authorizations`) against the plain entitlement
read (`GET /v1/customers/{id}/entitlements/{meter}`, which holds nothing) in the same run: in
process (a session calling the service) and over HTTP (`tally serve --no-jobs`), one caller at a
time and with concurrent callers, on distinct customers and all on one customer (whose callers
take turns on the same lock).

    .venv/bin/python bench/authorizations.py [--customers 1000] [--requests 1000] [--concurrency 16]

Every customer has a month of hourly and daily rollups of the limited meter (generated in SQL:
this measures deciding, not ingestion), and a limit high enough that every authorization is
allowed and recorded (the path that writes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import create_engine, libpq_url, session_factory
from bench._database import derive_daily_rollups, scratch_database
from bench._http_client import KeepAliveClient
from bench._server import cli, running_server
from billing.credits import spend_authorizations
from billing.credits.spend_authorizations import SpendRequest
from billing.invoices.service import BillingWindow
from customers import service as customers
from metering import authorizations
from metering.authorizations import AuthorizationRequest
from metering.entitlements import entitlement_by_external_id

SERVE_ARGS = ("--no-jobs",)
CATALOG = (
    (Path(__file__).resolve().parents[1] / "app" / "demo" / "catalog.toml").read_text()
    + """
[[plans]]
key = "capped"
name = "Capped"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "requests"
  model = "per_unit"
  unit_price = "0.01"
  limit = 1000000000
"""
)


def load(url: str, customers: int) -> list[str]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=30)
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO customers (id, external_id, name, currency, status, created_at) "
            "SELECT gen_random_uuid(), 'load_' || n, 'Load ' || n, 'USD', 'ACTIVE', %s FROM generate_series(0, %s) n",
            (start, customers - 1),
        )
        connection.execute(
            "INSERT INTO subscriptions (id, customer_id, plan_version_id, started_at, created_at, billing_anchor) "
            "SELECT gen_random_uuid(), c.id, v.id, %s, %s, %s FROM customers c, plan_versions v "
            "JOIN plans p ON p.id = v.plan_id WHERE p.key = 'capped'",
            (start, start, start),
        )
        connection.execute(
            """
            INSERT INTO usage_rollups (customer_id, meter_id, hour, dimensions, event_count, latest_at, latest_event_id)
            SELECT c.id, m.id, h, jsonb_build_object('model', 'fast-1'), 10, h, 'load'
            FROM customers c, meters m, generate_series(%s, %s, interval '1 hour') h
            WHERE m.key = 'requests'
            """,
            (start, now - timedelta(hours=1)),
        )
        connection.execute(
            "INSERT INTO subscription_phases (subscription_id, customer_id, starts_at, plan_version_id, "
            "billing_anchor) SELECT id, customer_id, started_at, plan_version_id, billing_anchor FROM subscriptions"
        )
        connection.execute(
            "INSERT INTO credit_balance_settings (customer_id, currency, recharge_enabled, recharge_priority, "
            "balance_low, balance_low_crossings, spend_cap, updated_by, updated_at) "
            "SELECT id, 'USD', false, 100, false, 0, 10000000000, 'bench', now() FROM customers"
        )
        derive_daily_rollups(connection)
        connection.execute("ANALYZE")
    return [f"load_{n}" for n in range(customers)]


def describe(name: str, durations: list[float]) -> str:
    durations = sorted(durations)
    return (
        f"  {name}: p50 {statistics.median(durations) * 1000:.2f} ms, "
        f"p99 {durations[int(0.99 * (len(durations) - 1))] * 1000:.2f} ms"
    )


async def timed_concurrently(
    calls: int, concurrency: int, call: Callable[[int, int], Awaitable[object]]
) -> tuple[list[float], float]:
    """Each call's latency, ``concurrency`` callers at a time (``call(caller, index)``), and the
    calls a second overall."""
    durations: list[float] = []
    queue = iter(range(calls))

    async def caller(number: int) -> None:
        for index in queue:
            started = time.perf_counter()
            await call(number, index)
            durations.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(number) for number in range(concurrency)))
    return durations, calls / (time.perf_counter() - started)


async def in_process(url: str, picks: list[str], concurrency: int) -> None:
    engine = create_engine(url, pool_size=concurrency)
    sessions = session_factory(engine)

    async def entitle(_: int, index: int) -> None:
        async with sessions() as session:
            await entitlement_by_external_id(session, picks[index], "requests", as_of=datetime.now(UTC))
            await session.commit()

    async def authorize(_: int, index: int) -> None:
        async with sessions() as session:
            await authorizations.authorize(
                session,
                picks[index],
                AuthorizationRequest("requests", Decimal(1), uuid.uuid4().hex),
                as_of=datetime.now(UTC),
                may_see=lambda _: True,
            )
            await session.commit()

    window = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))

    async def authorize_spend(_: int, index: int) -> None:
        async with sessions() as session:
            customer_id = (await customers.get_customer(session, external_id=picks[index])).id  # type: ignore[union-attr]
            done = await spend_authorizations.authorize_spend(
                session, customer_id, SpendRequest(100, "USD", uuid.uuid4().hex), as_of=datetime.now(UTC), window=window
            )
            assert done.authorization.allowed
            await session.commit()

    calls = len(picks)
    await timed_concurrently(50, 1, entitle)  # warm up: connections, plan versions
    await timed_concurrently(50, 1, authorize)
    await timed_concurrently(50, 1, authorize_spend)
    print(f"in process, {calls} calls each:")
    for concurrency_now in (1, concurrency):
        entitled, _ = await timed_concurrently(calls, concurrency_now, entitle)
        authorized, rate = await timed_concurrently(calls, concurrency_now, authorize)
        print(describe(f"entitlement read, {concurrency_now} at once (baseline)", entitled))
        print(describe(f"authorization, {concurrency_now} at once ({rate:.0f}/s)", authorized))
        print(
            f"  ratio authorization/entitlement (median): {statistics.median(authorized) / statistics.median(entitled):.1f}x"
        )
    spent, rate = await timed_concurrently(calls, 1, authorize_spend)
    print(describe(f"spend authorization (an amount: credits and spend cap), 1 at once ({rate:.0f}/s)", spent))
    await engine.dispose()


async def over_http(base_url: str, token: str, picks: list[str], concurrency: int) -> None:
    """Each caller has its own keep-alive connection (:class:`KeepAliveClient`, as a load tool
    would); the last figure, for scale, is the same authorizations sent with httpx."""
    headers = {"authorization": f"Bearer {token}"}
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(KeepAliveClient(base_url, headers)) for _ in range(64)]

        async def entitle(caller: int, index: int) -> None:
            status, _ = await clients[caller].request("GET", f"/v1/customers/{picks[index]}/entitlements/requests")
            assert status == 200

        async def authorize_one(caller: int, customer: str) -> None:
            body = {"meter": "requests", "quantity": 1, "idempotencyKey": uuid.uuid4().hex}
            status, answer = await clients[caller].request("POST", f"/v1/customers/{customer}/authorizations", body)
            assert status == 201 and answer["allowed"], answer

        async def authorize(caller: int, index: int) -> None:
            await authorize_one(caller, picks[index])

        async def authorize_hot(caller: int, _: int) -> None:
            await authorize_one(caller, picks[0])

        async def warm_up(caller: int, index: int) -> None:
            await entitle(caller, index)
            await authorize(caller, index)

        calls = len(picks)
        await timed_concurrently(64, 64, warm_up)  # every connection open and used
        await timed_concurrently(50, 1, warm_up)
        print(f"over HTTP, {calls} requests each:")
        for concurrency_now in (1, concurrency):
            entitled, _ = await timed_concurrently(calls, concurrency_now, entitle)
            authorized, rate = await timed_concurrently(calls, concurrency_now, authorize)
            print(describe(f"entitlement read, {concurrency_now} at once (baseline)", entitled))
            print(describe(f"authorization, {concurrency_now} at once ({rate:.0f}/s)", authorized))
            ratio = statistics.median(authorized) / statistics.median(entitled)
            print(f"  ratio authorization/entitlement (median): {ratio:.1f}x")
        hot, rate = await timed_concurrently(calls, 64, authorize_hot)
        print(describe(f"authorization, 64 at once on one customer, taking turns ({rate:.0f}/s)", hot))
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:

        async def authorize_with_httpx(_: int, index: int) -> None:
            body = {"meter": "requests", "quantity": 1, "idempotencyKey": uuid.uuid4().hex}
            (await http.post(f"/v1/customers/{picks[index]}/authorizations", json=body)).raise_for_status()

        await timed_concurrently(50, 1, authorize_with_httpx)
        with_httpx, _ = await timed_concurrently(calls, 1, authorize_with_httpx)
        print(describe("authorization, 1 at once, sent with httpx (its client-side Python included)", with_httpx))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as url:
        catalog = Path(data_dir) / "catalog.toml"
        catalog.write_text(CATALOG)
        cli(url, Path(data_dir), "catalog", "apply", str(catalog))
        external_ids = load(url, args.customers)
        picks = [rng.choice(external_ids) for _ in range(args.requests)]
        print(f"{args.customers:,} customers, a month of rollups each")
        asyncio.run(in_process(url, picks, args.concurrency))
        token = cli(url, Path(data_dir), "token", "create", "--role", "edge")
        with running_server(url, Path(data_dir), *SERVE_ARGS, TALLY_TRACING="false") as base_url:
            asyncio.run(over_http(base_url, token, picks, args.concurrency))


if __name__ == "__main__":
    main()
