"""No client can stall everyone, and an outage of PostgreSQL is answered, not crashed on.

One real `tally serve` over a PostgreSQL cluster of this module's own, which the last test stops
and starts again. Oversized and slow uploads are refused before they cost a database connection;
a sign-in flood leaves the edge's entitlement check its latency.
"""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from app.auth import create_token
from app.database import create_engine, migrate, session_factory, start_embedded_postgres
from customers.service import NewCustomer, create_customer
from tests.conftest import admin_execute, with_database
from tests.e2e.conftest import TALLY, server_env, start_server

pytestmark = pytest.mark.e2e
CATALOG = Path(__file__).resolve().parents[2] / "app" / "demo" / "catalog.toml"
ENTITLEMENT = "/v1/customers/org_flood/entitlements/requests"
BODY_READ_TIMEOUT_SECONDS = 3
SLOW_UPLOADS = 25  # more than the pool's 20 connections
FLOODERS = 8
FLOOD_SECONDS = 20.0
# A starvation bound, not a latency target: argon2 hashing for unknown emails once held the
# event loop for seconds under such a flood. Its p99 (about 3 ms here when the machine is quiet,
# printed by the test) is a benchmark's business: with the rest of the suite's servers and jobs
# on two cores it varies from 5 to 15 ms, which a timed test cannot tell from a regression.
ENTITLEMENT_P99_MS = 100.0


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster to stop and start: its data directory, socket directory and owner."""

    pgdata: Path
    socket_dir: str
    owner: str
    url: str

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", *args]
        subprocess.run(command, user=self.owner, check=True, capture_output=True, timeout=60)

    def crash(self) -> None:
        """Every PostgreSQL process exits at once, as in a crash (recovery runs at the next start)."""
        self.pg_ctl("-m", "immediate", "stop")

    def start(self) -> None:
        log = self.pgdata / "restart.log"
        self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(log), "start")


@dataclass(frozen=True)
class Server:
    base_url: str
    viewer_token: str
    cluster: Cluster
    database_url: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("outage-cluster")
    server_url = start_embedded_postgres(data_dir)
    pgdata = (data_dir / "postgres").resolve()
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    admin_execute(server_url, "CREATE DATABASE tally")
    owner = Path(pgdata).owner()
    cluster = Cluster(pgdata, lines[4], owner, with_database(server_url, "tally"))
    yield cluster
    if (pgdata / "postmaster.pid").exists():
        cluster.pg_ctl("-m", "fast", "stop")


async def _prepare(url: str) -> str:
    """A customer on Pro and a viewer token (the edge's entitlement checks)."""
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        new = NewCustomer(external_id="org_flood", name="Flood", currency="USD", plan_key="pro")
        await create_customer(session, new, as_of=datetime.now(UTC))
        issued = await create_token(
            session, role="viewer", customer_external_id=None, label=None, as_of=datetime.now(UTC)
        )
        await session.commit()
    await engine.dispose()
    return issued.token


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    migrate(cluster.url)
    data_dir = tmp_path_factory.mktemp("outage-data")
    env = {
        **server_env(cluster.url, data_dir),
        "TALLY_BODY_READ_TIMEOUT_SECONDS": str(BODY_READ_TIMEOUT_SECONDS),
        # The span store's exporter alone puts the entitlement's quiet p99 near 12 ms on this 2-core
        # machine (5.6 ms without it, measured): a cost of its own, not the flood's.
        "TALLY_TRACING": "false",
    }
    subprocess.run([str(TALLY), "catalog", "apply", str(CATALOG)], env=env, check=True, capture_output=True)
    token = asyncio.run(_prepare(cluster.url))
    # An API process for the edge, as deployments run it (docs/performance.md): the jobs are another's.
    process, base_url = start_server(env, data_dir / "serve.log", "--no-jobs")
    yield Server(base_url, token, cluster, cluster.url)
    process.terminate()
    process.wait(timeout=30)


def raw_request(server: Server, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request head (and some of a body) on a socket of its own; the status and the rest."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def test_oversized_bodies_are_refused_before_they_are_read(server: Server) -> None:
    started = time.monotonic()
    status, body = raw_request(
        server,
        "POST /webhooks/stripe HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\nContent-Length: 314572800",
    )
    assert status == 413 and b'"BODY_TOO_LARGE"' in body
    assert time.monotonic() - started < 5, "answered at once: nothing of the 300 MB was awaited"
    status, body = raw_request(
        server,
        "POST /console/login HTTP/1.1\r\nHost: tally\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked",
        b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024),  # 64 KiB and counting, never ended
    )
    assert status == 413 and b'"BODY_TOO_LARGE"' in body


def _slow_upload(server: Server, token: str) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: tally\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    connection.sendall(head.encode() + b'{"query": ')
    return connection


def test_slow_uploads_hold_no_database_connection(server: Server) -> None:
    """Each slow client authenticates with a token the server has not seen (a database read), then
    dribbles its body: were the body read after authentication, each would hold a connection."""
    tokens = asyncio.run(_tokens(server.database_url, SLOW_UPLOADS))
    headers = {"Authorization": f"Bearer {server.viewer_token}"}
    assert httpx.get(f"{server.base_url}{ENTITLEMENT}", headers=headers).status_code == 200
    uploads = [_slow_upload(server, token) for token in tokens]
    try:
        time.sleep(1)
        for _ in range(3):
            started = time.monotonic()
            check = httpx.get(f"{server.base_url}{ENTITLEMENT}", headers=headers, timeout=30)
            assert check.status_code == 200, check.text
            assert time.monotonic() - started < 2, "a trivial query waited for a connection"
            for upload in uploads:
                upload.sendall(b" ")
            time.sleep(0.3)
        for upload in uploads:
            upload.settimeout(BODY_READ_TIMEOUT_SECONDS + 10)
            answer = b""
            while chunk := upload.recv(65536):  # to the end: the server closes after a refusal
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"BODY_READ_TIMEOUT"' in answer
    finally:
        for upload in uploads:
            upload.close()


async def _tokens(url: str, count: int) -> list[str]:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        issued = [
            await create_token(session, role="viewer", customer_external_id=None, label=None, as_of=datetime.now(UTC))
            for _ in range(count)
        ]
        await session.commit()
    await engine.dispose()
    return [token.token for token in issued]


async def _flood(base_url: str, seconds: float, answers: dict[int, int]) -> None:
    async def one_connection() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            page = await http.get("/console/login")
            match = re.search(r'name="csrftoken" value="([^"]+)"', page.text)
            assert match
            token = match.group(1)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                response = await http.post(
                    "/console/login",
                    data={
                        "email": f"nobody-{uuid.uuid4().hex[:12]}@example.com",
                        "password": "not the password at all",
                        "csrftoken": token,
                    },
                )
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                # The token is bound to the sign-in attempt's session: a flooder reads the new one.
                if found := re.search(r'name="csrftoken" value="([^"]+)"', response.text):
                    token = found.group(1)

    await asyncio.gather(*(one_connection() for _ in range(FLOODERS)))


def flood(base_url: str, seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Runs in a process of its own, so the flooders never hold the measuring thread's GIL."""
    answers: dict[int, int] = {}
    results.put("started")
    asyncio.run(_flood(base_url, seconds, answers))
    results.put(answers)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class EntitlementChecks:
    """The edge's check, timed on one kept-alive connection (the standard library's client, whose
    own overhead is small and steady)."""

    def __init__(self, server: Server) -> None:
        host, port = server.base_url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Authorization": f"Bearer {server.viewer_token}"}

    def timed(self) -> float:
        """One check's time in milliseconds."""
        started = time.perf_counter()
        self.connection.request("GET", ENTITLEMENT, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status == 200, body
        return elapsed

    def sample(self, *, count: int | None = None, seconds: float | None = None) -> list[float]:
        samples: list[float] = []
        stop = time.monotonic() + (seconds or 0)
        while len(samples) < (count or 0) or time.monotonic() < stop:
            samples.append(self.timed())
            time.sleep(0.01)
        return samples


def test_a_sign_in_flood_leaves_the_entitlement_check_its_latency(server: Server) -> None:
    """Eight connections post wrong passwords for unknown emails as fast as they are answered; the
    check is timed from the flood's first request to its last."""
    checks = EntitlementChecks(server)
    checks.sample(count=20)  # warm: the token cache, pooled connections
    quiet = checks.sample(count=100)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    flooder = context.Process(target=flood, args=(server.base_url, FLOOD_SECONDS, results))
    flooder.start()
    assert results.get(timeout=60) == "started"
    # Starting the flooder can take longer than uvicorn keeps an idle connection open (5 s) on a
    # loaded machine: the checks go on over a new connection, warmed by one untimed check.
    checks.connection.close()
    checks.timed()
    under_flood = checks.sample(seconds=FLOOD_SECONDS)
    answers = results.get(timeout=FLOOD_SECONDS + 60)
    flooder.join(timeout=30)
    checks.connection.close()

    figures = (
        f"entitlement quiet p50 {statistics.median(quiet):.1f} ms p99 {percentile(quiet, 0.99):.1f} ms; "
        f"under flood p50 {statistics.median(under_flood):.1f} ms p99 {percentile(under_flood, 0.99):.1f} ms "
        f"({len(under_flood)} checks); sign-in answers {answers}"
    )
    print(figures)
    assert 401 in answers and 429 in answers, figures
    assert percentile(under_flood, 0.99) < ENTITLEMENT_P99_MS, figures


def test_an_outage_of_postgresql_is_answered_in_json_and_recovered_from(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.viewer_token}"}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.get(ENTITLEMENT, headers=headers).status_code == 200  # the token is known
        assert http.get("/readyz").json()["status"] == "ready"
        server.cluster.crash()
        try:
            for path in ("/healthz", "/readyz"):
                down = http.get(path)
                assert down.status_code == 503, path
                assert down.json()["code"] == "DATABASE_UNAVAILABLE"
            for attempt in (
                lambda: http.get(ENTITLEMENT, headers=headers),
                lambda: http.post(
                    "/graphql", json={"query": "{ customers { edges { node { id } } } }"}, headers=headers
                ),
                lambda: http.post("/v1/events", json=[], headers={"Authorization": "Bearer tly_unknown"}),
            ):
                answer = attempt()
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == "DATABASE_UNAVAILABLE"
                assert "retry" in answer.json()["message"]
            assert http.get("/console/login").status_code == 200, "what needs no database still works"
        finally:
            server.cluster.start()
        deadline = time.monotonic() + 30
        while http.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "healthz did not recover"
            time.sleep(0.2)
        assert http.get("/readyz").status_code == 200
        recovered = [http.get(ENTITLEMENT, headers=headers).status_code for _ in range(3)]
        assert recovered[-1] == 200, recovered
        with psycopg.connect(server.database_url) as connection:
            assert connection.execute("SELECT count(*) FROM customers").fetchone() == (1,)
    assert os.path.exists(server.cluster.pgdata / "postmaster.pid")
