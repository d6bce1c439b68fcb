"""One embedded PostgreSQL per test session; every test gets its own database, cloned from a
template that the real migrations built, so tests are isolated and still run real SQL."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import create_token
from app.database import create_engine, migrate, session_factory, start_embedded_postgres, stop_embedded_postgres
from app.demo import load_demo
from app.main import create_app
from app.settings import Settings
from ledger.verify import CHECKS as LEDGER_CHECKS
from pricing.service import apply_catalog

REPO = Path(__file__).resolve().parents[1]
# The contract and Stripe's fixtures live beside the repository; a git worktree elsewhere names
# their folder in TALLY_SHARED_DIR.
SHARED = Path(os.environ.get("TALLY_SHARED_DIR") or REPO.parent / "shared")
CONTRACT = SHARED / "contract"
DEMO_CATALOG = REPO / "app" / "demo" / "catalog.toml"
# An add-on beside the demo catalog's plans (none of which charges storage), for the tests of
# several subscriptions per customer.
STORAGE_ADD_ON = """
[[meters]]
key = "storage"
name = "Storage"
unit = "GB"
event_type = "storage.used"
aggregation = "count"

[[plans]]
key = "storage-addon"
name = "Storage add-on"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "storage"
  model = "per_unit"
  unit_price = "0.50"
  included = 10
  limit = 1000
"""
TEMPLATE_DB = "tally_template"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL server: TALLY_TEST_DATABASE_URL if set (a superuser URL), else embedded,
    stopped when the session ends."""
    configured = os.environ.get("TALLY_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    data_dir = tmp_path_factory.mktemp("tally-data")
    url = start_embedded_postgres(data_dir)
    # The tests kill processes (servers, consumers, PostgreSQL itself), never the machine: what
    # PostgreSQL has written survives them in the kernel's cache, so flushing it to the disk only
    # slows every commit (3×) and every database dropped after a test (0.9 s to 0.03 s here).
    admin_execute(
        url, "ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET full_page_writes = off", "SELECT pg_reload_conf()"
    )
    yield url
    stop_embedded_postgres(data_dir)


def admin_execute(server_url: str, *statements: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    admin_execute(server_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB}", f"CREATE DATABASE {TEMPLATE_DB}")
    url = with_database(server_url, TEMPLATE_DB)
    migrate(url)
    return url


def clone_database(server_url: str, name: str, template: str = TEMPLATE_DB) -> str:
    """A copy of the template; copying its files is about twice as fast as logging its pages."""
    admin_execute(server_url, f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    return with_database(server_url, name)


class DatabasePool:
    """Clones of the template made ahead, and finished databases dropped, in threads beside the
    tests. While the tests write, a clone takes half a second or more (against a tenth on an
    idle server), longer than many tests: ``AHEAD`` clones are kept in the making, two at once,
    so a test seldom waits for its database."""

    AHEAD = 3

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-databases")
        self.ahead: deque[Future[str]] = deque(self._clone() for _ in range(self.AHEAD))

    def _clone(self) -> Future[str]:
        return self.workers.submit(clone_database, self.server_url, f"test_{uuid.uuid4().hex[:16]}")

    def take(self) -> str:
        url = self.ahead.popleft().result()
        self.ahead.append(self._clone())
        return url

    def settle(self) -> None:
        """Wait for the clones in flight: a connection to the template while one runs makes it fail."""
        for clone in self.ahead:
            clone.result()

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        self.workers.submit(admin_execute, self.server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        for clone in self.ahead:
            self.drop(clone.result())
        self.workers.shutdown(wait=True)


@pytest.fixture(scope="session")
def database_pool(server_url: str, template_url: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(server_url)
    yield pool
    pool.close()


def ledger_violations(url: str) -> list[str]:
    """What `tally ledger verify` would report, read with plain SQL."""
    with psycopg.connect(url) as connection:
        return [f"{check}: {row}" for check, sql in LEDGER_CHECKS.items() for row in connection.execute(sql)]


@pytest.fixture
def idle_template_url(template_url: str, database_pool: DatabasePool) -> str:
    """The template, for a test that connects to it: no clone of it runs meanwhile."""
    database_pool.settle()
    return template_url


class DemoTemplates:
    """Templates holding the demo's data (``tally demo``), made the first time a test asks for
    one and cloned for every test that wants the demo: loading it costs seconds (its month of
    usage most), a clone a tenth of one. The demo is loaded as of the template's making."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.loaded_at: dict[bool, datetime] = {}

    def clone(self, *, with_usage: bool) -> str:
        template = "tally_demo_usage_template" if with_usage else "tally_demo_template"
        if with_usage not in self.loaded_at:
            admin_execute(self.server_url, f"DROP DATABASE IF EXISTS {template}")
            template_url = clone_database(self.server_url, template)
            self.loaded_at[with_usage] = now()
            with ThreadPoolExecutor(1) as thread:  # its own event loop, whatever runs in this one
                thread.submit(asyncio.run, _load_demo(template_url, self.loaded_at[with_usage], with_usage)).result()
        return clone_database(self.server_url, f"test_{uuid.uuid4().hex[:16]}", template)


async def _load_demo(url: str, as_of: datetime, with_usage: bool) -> None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            await load_demo(session, as_of=as_of, with_usage=with_usage)
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def demo_templates(server_url: str, template_url: str) -> DemoTemplates:
    return DemoTemplates(server_url)


@pytest.fixture
def demo_data() -> None:
    """Asked for by a test (or its fixtures) that wants the demo's customers, invoices and grants
    in its database; marked ``demo_usage``, its month of usage too."""


@pytest.fixture
def database_url(database_pool: DatabasePool, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test; when the test is done, every ledger invariant must hold."""
    if "demo_data" in request.fixturenames:
        with_usage = request.node.get_closest_marker("demo_usage") is not None
        url = request.getfixturevalue("demo_templates").clone(with_usage=with_usage)
    else:
        url = database_pool.take()
    yield url
    violations = ledger_violations(url)
    database_pool.drop(url)
    assert violations == [], violations


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        env="test",
        tracing=False,
        secret_key="test-secret-key-for-signing-console-sessions",
    )


@pytest.fixture
async def app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(settings, database_url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def live_url(app: FastAPI) -> AsyncIterator[str]:
    """The test's app served by uvicorn on a free port (its lifespan already runs in the ``app``
    fixture), for tests that must go through real sockets: races, scrapes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        yield http


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_engine(database_url)
    async with session_factory(engine)() as db_session:
        yield db_session
    await engine.dispose()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory, for code that opens its own transactions (the billing run)."""
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def catalog(session: AsyncSession) -> None:
    """The example catalog of the contract, applied and committed."""
    await apply_catalog(session, DEMO_CATALOG.read_text(), as_of=now())
    await session.commit()


@pytest.fixture
def token_for(session: AsyncSession):  # type: ignore[no-untyped-def]
    """Make a bearer token of a role (and customer, for the customer role)."""

    async def make(role: str, customer: str | None = None) -> str:
        issued = await create_token(session, role=role, customer_external_id=customer, label=None, as_of=now())
        await session.commit()
        return issued.token

    return make


async def graphql(
    client: httpx.AsyncClient, token: str | None, query: str, variables: dict | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


class SentStatements(list[str]):
    """The statements sent, in order; :attr:`round_trips` counts the statements sent together in
    one pipeline as one round trip (the transaction's BEGIN and COMMIT are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipelines: list[int | None] = []  # the pipeline each statement was sent in, if any

    def record(self, query: object, cursor: psycopg.AsyncCursor[Any]) -> None:
        pipeline = cursor.connection._pipeline
        serial = None
        if pipeline is not None:
            serial = getattr(pipeline, "tally_serial", None)
            if serial is None:
                serial = len(self.pipelines) + 1
                pipeline.tally_serial = serial  # type: ignore[attr-defined]
        self.append(str(query))
        self.pipelines.append(serial)

    def clear(self) -> None:
        super().clear()
        self.pipelines.clear()

    @property
    def round_trips(self) -> int:
        return sum(
            1
            for index, pipeline in enumerate(self.pipelines)
            if pipeline is None or index == 0 or self.pipelines[index - 1] != pipeline
        )


@pytest.fixture
def sent_statements(monkeypatch: pytest.MonkeyPatch) -> SentStatements:
    """Every statement this process sends to PostgreSQL from here on, however it is sent: through
    SQLAlchemy or on a session's own psycopg connection (the hot paths)."""
    sent = SentStatements()
    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany

    async def counted_execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
        sent.record(query, self)
        return await execute(self, query, params, **kwargs)

    async def counted_executemany(self, query, params_seq, **kwargs):  # type: ignore[no-untyped-def]
        sent.record(query, self)
        return await executemany(self, query, params_seq, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted_execute)
    monkeypatch.setattr(psycopg.AsyncCursor, "executemany", counted_executemany)
    return sent
