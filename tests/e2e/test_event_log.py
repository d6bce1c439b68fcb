"""Ingestion through the replicated event log (issue 19), on a real three-node JetStream cluster
started here on free loopback ports: two edge servers publish, two `tally consume` processes
count, and a direct server (no log) over the same database answers the same bodies. The log's
backlog shows in GraphQL, /metrics and the console; faults (a NATS node or a consumer killed -9,
PostgreSQL stopped for 30 s on a stack of its own) lose nothing acknowledged and count it once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from nats.js.api import ConsumerInfo
from prometheus_client.parser import text_string_to_metric_families

from app.auth import create_token
from app.database import create_engine, migrate, session_factory
from app.nats_cluster import LocalCluster, local_cluster, wait_until_ready
from app.settings import Settings
from app.usage_ingest import log_config
from customers.service import NewCustomer, create_customer
from metering.event_log import CONSUMER_NAME, EventLog, partition_of
from pricing.service import apply_catalog
from tests.conftest import admin_execute, clone_database, with_database
from tests.console.test_console import csrf_of
from tests.e2e.conftest import TALLY, free_port, server_env
from tests.e2e.test_hostile_input import CATALOG, HOSTILE_EVENTS, hostile

pytestmark = pytest.mark.e2e

CUSTOMERS = [f"org_log_{n}" for n in range(8)]
NOW = datetime.now(UTC)
MAX_PER_REQUEST = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    nodes = local_cluster(
        tmp_path_factory.mktemp("nats"),
        client_ports=[free_port() for _ in range(3)],
        cluster_ports=[free_port() for _ in range(3)],
    )
    nodes.start_all()
    try:
        asyncio.run(wait_until_ready(log_config(Settings(nats_url=nodes.url))))
        yield nodes
    finally:
        nodes.stop()


@dataclass
class Stack:
    direct: str
    edges: list[str]
    unreachable_log_edge: str
    consumers: list[subprocess.Popen[bytes]]
    ingest_token: str
    admin_token: str
    viewer_token: str
    env: dict[str, str]
    log_dir: Path

    def post(self, base_url: str, body: bytes, *, token: str | None = None, ndjson: bool = False) -> httpx.Response:
        headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
        if token != "":
            headers["Authorization"] = f"Bearer {token or self.ingest_token}"
        return httpx.post(f"{base_url}/v1/events", content=body, headers=headers, timeout=30)

    def usage(self, customer: str) -> Decimal:
        response = httpx.post(
            f"{self.direct}/graphql",
            json={
                "query": "query($c: String!) { customer(externalId: $c) { usage { meter { key } quantity } } }",
                "variables": {"c": customer},
            },
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        usage = response.json()["data"]["customer"]["usage"]
        return sum((Decimal(u["quantity"]) for u in usage if u["meter"]["key"] == "tokens"), Decimal(0))

    def start_consumer(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"consume-{len(self.consumers)}.log").open("a")
        consumer = subprocess.Popen([str(TALLY), "consume"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.consumers.append(consumer)
        return consumer


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [str(TALLY), "serve", "--no-jobs", "--port", str(port)], env=env, stdout=log.open("a"), stderr=subprocess.STDOUT
    )
    return process, f"http://127.0.0.1:{port}"


def _wait_healthy(servers: list[tuple[subprocess.Popen[bytes], str]], log_dir: Path) -> None:
    deadline = time.monotonic() + 120  # four servers start at once on two shared cores
    waiting = list(servers)
    while waiting:
        process, base_url = waiting[0]
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                waiting.pop(0)
                continue
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            logs = "\n".join(path.read_text() for path in log_dir.glob("*.log"))
            raise RuntimeError(f"a server did not start:\n{logs}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(
    server_url: str, template_url: str, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = clone_database(server_url, "tally_event_log")
    log_dir = tmp_path_factory.mktemp("event-log")
    direct_env = {**server_env(url, log_dir), "TALLY_EVENTS_MAX_PER_REQUEST": str(MAX_PER_REQUEST)}
    log_env = {**direct_env, "TALLY_NATS_URL": cluster.url, "TALLY_NATS_ACK_WAIT_SECONDS": "3"}
    unreachable_env = {
        **log_env,
        "TALLY_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "TALLY_NATS_PUBLISH_TIMEOUT_SECONDS": "2",
    }
    catalog = log_dir / "catalog.toml"
    catalog.write_text(CATALOG)

    def cli(*args: str) -> str:
        result = subprocess.run([str(TALLY), *args], env=direct_env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    cli("catalog", "apply", str(catalog))
    tokens = [cli("token", "create", "--role", role) for role in ("ingest", "admin", "viewer")]
    servers = [
        _serve(env, log_dir / f"{name}.log")
        for name, env in (
            ("direct", direct_env),
            ("edge-1", log_env),
            ("edge-2", log_env),
            ("edge-unreachable", unreachable_env),
        )
    ]
    found = Stack(servers[0][1], [servers[1][1], servers[2][1]], servers[3][1], [], *tokens, log_env, log_dir)
    try:
        _wait_healthy(servers, log_dir)
        for customer in [*CUSTOMERS, "org_victim"]:
            created = httpx.post(
                f"{found.direct}/graphql",
                json={
                    "query": "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code } } }",
                    "variables": {
                        "i": {
                            "externalId": customer,
                            "name": customer,
                            "currency": "USD",
                            "planKey": "metered",
                            "startedAt": (NOW - timedelta(days=1)).isoformat(),
                        }
                    },
                },
                headers={"Authorization": f"Bearer {found.admin_token}"},
                timeout=30,
            ).json()
            assert created["data"]["createCustomer"]["userErrors"] == [], created
        found.start_consumer()
        found.start_consumer()
        yield found
    finally:
        for process, _ in servers:
            process.terminate()
        for consumer in found.consumers:
            consumer.terminate()
        for process in [*(p for p, _ in servers), *found.consumers]:
            process.wait(timeout=20)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_event_log WITH (FORCE)")


def token_event(event_id: str, customer: str, tokens: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "customer": customer,
        "type": "llm.tokens",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "properties": {"model": "fast-1", "tokens": tokens},
    }


LOG_BACKLOG = """{ meteringOverview { waitingToRollUp eventLog {
  state pending oldestPendingAgeMs partitions { partition subject pending oldestPendingAt oldestPendingAgeMs } } } }"""


def log_backlog(stack: Stack, base_url: str) -> dict[str, Any]:
    """The Metering overview's eventLog, as an operator's dashboard would read it."""
    response = httpx.post(
        f"{base_url}/graphql",
        json={"query": LOG_BACKLOG},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    backlog: dict[str, Any] = response.json()["data"]["meteringOverview"]["eventLog"]
    return backlog


def log_gauges(base_url: str) -> dict[str, dict[str, float]]:
    """The event log's gauges of a /metrics scrape, by name and then partition."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name.startswith("tally_event_log_"):
                found.setdefault(sample.name, {})[sample.labels.get("partition", "")] = sample.value
    return found


def wait_for_usage(stack: Stack, expected: dict[str, Decimal], *, timeout: float = 30) -> dict[str, Decimal]:
    deadline = time.monotonic() + timeout
    while True:
        found = {customer: stack.usage(customer) for customer in expected}
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_overlapping_retried_batches_through_two_edges_and_two_consumers_count_each_event_once(stack: Stack) -> None:
    """8 clients send overlapping batches (each event id in two or three of them, always with the
    same payload), each batch twice (a retry, to the other edge); usage is the distinct events."""
    distinct = 3200
    events = [token_event(f"log-{n}", CUSTOMERS[n % len(CUSTOMERS)], n % 5 + 1) for n in range(distinct)]
    expected = {customer: Decimal(0) for customer in CUSTOMERS}
    for event in events:
        expected[event["customer"]] += event["properties"]["tokens"]
    answers: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    failures: list[str] = []

    def client(number: int) -> None:
        # Client n sends ids [400n, 400n + 800) (wrapping), in batches of 400: each id is sent by two clients.
        ids = [(number * 400 + offset) % distinct for offset in range(800)]
        for start in range(0, len(ids), 400):
            body = json.dumps([events[i] for i in ids[start : start + 400]]).encode()
            first = stack.post(stack.edges[number % 2], body)
            retry = stack.post(stack.edges[(number + 1) % 2], body)
            if first.status_code != 200 or retry.status_code != 200:
                failures.append(f"{first.status_code} {first.text} / {retry.status_code} {retry.text}")
                return
            answers.append((number, first.json(), retry.json()))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(answers) == 8 * 2
    for _, first, retry in answers:
        assert first["accepted"] + first["duplicates"] == 400 and first["rejected"] == []
        # The retry publishes the very same messages: the stream drops them by their Nats-Msg-Id.
        assert retry == {"accepted": 0, "duplicates": 400, "rejected": []}
    assert wait_for_usage(stack, expected) == expected
    time.sleep(1.5)  # whatever is still delivered again counts nothing more
    assert {customer: stack.usage(customer) for customer in CUSTOMERS} == expected


def _event_bytes(event_id: str) -> bytes:
    return json.dumps(token_event(event_id, "org_victim", 2)).encode()


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
def test_hostile_events_get_the_direct_paths_codes_and_messages(stack: Stack, ndjson: bool) -> None:
    """Each hostile event of tests/e2e/test_hostile_input.py, between two valid ones, and an event
    of an unknown type: the edge's answer names the same rejections (index, code, message)."""
    cases = {**HOSTILE_EVENTS, "an unknown type": (lambda: hostile(b'{"tokens": 1}', type='"no.such.type"'), "")}
    for case, (make_hostile, _) in cases.items():
        events = [_event_bytes(f"ok-{case}-{ndjson}-1"), make_hostile(), _event_bytes(f"ok-{case}-{ndjson}-2")]
        body = b"\n".join(events) if ndjson else b"[" + b",".join(events) + b"]"
        direct, edge = stack.post(stack.direct, body, ndjson=ndjson), stack.post(stack.edges[0], body, ndjson=ndjson)
        assert (direct.status_code, edge.status_code) == (200, 200), (case, direct.text, edge.text)
        assert edge.json()["rejected"] == direct.json()["rejected"], case
        assert len(edge.json()["rejected"]) == 1, case


@pytest.mark.parametrize(
    ("body", "token"),
    [
        (b"{not json", None),
        (b"[1,]", None),
        (b"\xff", None),
        (b"[" + b"{}," * MAX_PER_REQUEST + b"{}]", None),
        (b"[]", ""),
        (b"[]", "viewer"),
        (b"[]", "tly_not-a-token"),
    ],
    ids=["malformed", "empty element", "not UTF-8", "too many events", "no token", "wrong role", "unknown token"],
)
def test_a_refused_request_gets_the_direct_paths_status_and_code(stack: Stack, body: bytes, token: str | None) -> None:
    chosen = stack.viewer_token if token == "viewer" else token
    direct, edge = stack.post(stack.direct, body, token=chosen), stack.post(stack.edges[1], body, token=chosen)
    assert direct.status_code in (400, 401, 403, 413)
    assert (edge.status_code, edge.json()) == (direct.status_code, direct.json())


def test_an_unreachable_log_is_a_coded_503_with_retry_after(stack: Stack) -> None:
    response = stack.post(stack.unreachable_log_edge, json.dumps([token_event("never-1", CUSTOMERS[0], 1)]).encode())
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "EVENT_LOG_UNAVAILABLE"
    assert response.headers["Retry-After"] == "1"


def test_a_consumer_killed_mid_batch_leaves_its_batch_to_be_delivered_again_and_counted_once(
    stack: Stack, cluster: LocalCluster, server_url: str
) -> None:
    """Both consumers are killed (-9) while one of them is inside its counting transaction (seen in
    PostgreSQL) with messages taken and not acknowledged (seen in JetStream): part of the backlog is
    not counted then; new consumers take what they held (after the 3 s acknowledgement wait) and
    every event is counted once, and stays so once nothing is left to deliver."""
    customer = CUSTOMERS[3]
    before = stack.usage(customer)
    for consumer in stack.consumers:
        os.kill(consumer.pid, signal.SIGSTOP)  # the backlog builds while they are stopped
    sent = Decimal(0)
    for batch in range(10):
        events = [token_event(f"kill-{batch}-{n}", customer, 1) for n in range(MAX_PER_REQUEST)]
        assert stack.post(stack.edges[batch % 2], json.dumps(events).encode()).json()["accepted"] == MAX_PER_REQUEST
        sent += MAX_PER_REQUEST
    with psycopg.connect(server_url, autocommit=True) as admin:
        for consumer in stack.consumers:
            os.kill(consumer.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while not admin.execute(COUNTING_TRANSACTIONS).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "no consumer started counting"
            time.sleep(0.005)
        for consumer in stack.consumers:
            consumer.kill()
        for consumer in stack.consumers:
            consumer.wait()
    held = asyncio.run(consumer_state(cluster))
    assert (held.num_ack_pending or 0) > 0, "killed holding messages it had not acknowledged"
    assert stack.usage(customer) < before + sent, "killed before the backlog was counted"
    stack.consumers.clear()
    stack.start_consumer()
    stack.start_consumer()
    assert wait_for_usage(stack, {customer: before + sent}) == {customer: before + sent}
    assert wait_until(lambda: log_backlog(stack, stack.edges[0])["pending"] == 0)
    assert stack.usage(customer) == before + sent, "nothing counted twice once all was delivered again"


#: Counting transactions of the consumers in the stack's database, open now.
COUNTING_TRANSACTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = 'tally_event_log' AND backend_type = 'client backend' AND xact_start IS NOT NULL
  AND state IN ('active', 'idle in transaction') AND query !~* '^\\s*(select|begin)'
"""


async def consumer_state(cluster: LocalCluster) -> ConsumerInfo:
    event_log = EventLog(log_config(Settings(nats_url=cluster.url)))
    try:
        client, _ = await event_log.jetstream()
        return await client.jsm().consumer_info(event_log.config.stream, CONSUMER_NAME)
    finally:
        await event_log.close()


async def stream_leader(cluster: LocalCluster) -> str:
    event_log = EventLog(log_config(Settings(nats_url=cluster.url)))
    try:
        client, _ = await event_log.jetstream()
        info = await client.jsm().stream_info(event_log.config.stream)
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader
    finally:
        await event_log.close()


def test_a_nats_node_killed_during_ingestion_loses_nothing_acknowledged_and_ingestion_goes_on(
    stack: Stack, cluster: LocalCluster
) -> None:
    """Two clients send batches of 100 to both edges, each batch again until it is answered 200 (a
    503 while the cluster elects a new leader is a retry); the stream's leader is killed (-9) in
    the middle. Batches are answered 200 after the kill, and usage is exactly every acknowledged
    event, counted once."""
    customer = CUSTOMERS[5]
    before = stack.usage(customer)
    acknowledged: list[float] = []  # when each batch of 100 was answered 200
    refused: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        batch = 0
        while not stop.is_set():
            body = json.dumps([token_event(f"node-{number}-{batch}-{n}", customer, 1) for n in range(100)]).encode()
            for attempt in range(60):
                response = stack.post(stack.edges[(number + attempt) % 2], body)
                if response.status_code == 200:
                    answer = response.json()
                    if answer["accepted"] + answer["duplicates"] != 100 or answer["rejected"]:
                        failures.append(response.text)
                    acknowledged.append(time.monotonic())
                    break
                refused.append(response.status_code)
                time.sleep(0.2)
            else:
                failures.append(f"batch {number}-{batch} never acknowledged")
                return
            batch += 1

    victim = next(node for node in cluster.nodes if node.name == asyncio.run(stream_leader(cluster)))
    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        cluster.processes[victim.name].kill()
        cluster.processes[victim.name].wait()
        killed_at = time.monotonic()
        time.sleep(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        cluster.start(victim)
    assert failures == []
    assert set(refused) <= {503}, "a refusal is the log's coded 503, never a 500"
    assert sum(1 for moment in acknowledged if moment < killed_at) >= 5
    assert sum(1 for moment in acknowledged if moment > killed_at + 5) >= 5, "ingestion goes on without the node"
    expected = {customer: before + 100 * len(acknowledged)}
    assert wait_for_usage(stack, expected, timeout=60) == expected
    assert wait_until(lambda: log_backlog(stack, stack.edges[0])["pending"] == 0)
    assert stack.usage(customer) == expected[customer]


def test_the_logs_backlog_per_partition_shows_in_graphql_and_metrics_and_drains(stack: Stack) -> None:
    """With the consumers stopped, three requests for two customers of different partitions wait
    in the log: each partition's pending messages and oldest age show in the Metering overview and
    in /metrics, growing with time; once the consumers run again both read 0. A server without a
    log says so, and one whose log cannot be reached says that, within the read timeout."""
    partitions = log_config(Settings(nats_url="nats://unused")).partitions
    first = CUSTOMERS[0]
    second = next(c for c in CUSTOMERS if partition_of(c, partitions) != partition_of(first, partitions))
    first_partition, second_partition = (str(partition_of(c, partitions)) for c in (first, second))
    assert wait_until(lambda: log_backlog(stack, stack.edges[0])["pending"] == 0), "earlier tests' backlog drained"
    for consumer in stack.consumers:
        os.kill(consumer.pid, signal.SIGSTOP)
    try:
        for request in range(3):
            events = [token_event(f"backlog-{request}-{customer}", customer, 1) for customer in (first, second)]
            assert stack.post(stack.edges[request % 2], json.dumps(events).encode()).json()["accepted"] == 2
        time.sleep(1.2)
        backlog = log_backlog(stack, stack.edges[1])
        by_partition = {str(p["partition"]): p for p in backlog["partitions"]}
        assert backlog["state"] == "READ" and len(by_partition) == partitions
        assert backlog["pending"] == 6, "one message a partition's share of each request"
        assert by_partition[first_partition]["pending"] == 3 and by_partition[second_partition]["pending"] == 3
        assert by_partition[first_partition]["subject"] == f"tally.events.{first_partition}"
        assert Decimal(by_partition[first_partition]["oldestPendingAgeMs"]) >= 1000
        assert Decimal(backlog["oldestPendingAgeMs"]) >= Decimal(by_partition[first_partition]["oldestPendingAgeMs"])
        quiet = [p for p in backlog["partitions"] if str(p["partition"]) not in (first_partition, second_partition)]
        assert all(p["pending"] == 0 and p["oldestPendingAgeMs"] is None for p in quiet)
        gauges = log_gauges(stack.edges[0])
        assert gauges["tally_event_log_pending"][first_partition] == 3
        assert gauges["tally_event_log_pending"][second_partition] == 3
        assert sum(gauges["tally_event_log_pending"].values()) == 6
        assert gauges["tally_event_log_oldest_pending_seconds"][first_partition] >= 1.0
        assert gauges["tally_event_log_reachable"] == {"": 1.0}
        time.sleep(1)
        later = log_gauges(stack.edges[0])["tally_event_log_oldest_pending_seconds"][first_partition]
        assert later >= gauges["tally_event_log_oldest_pending_seconds"][first_partition] + 0.9, "the lag grows"
        page = metering_page(stack, stack.edges[0])
        card = page.split("<h3>Event log</h3>")[1].split("</section>")[0]
        assert "<p>6</p>" in card and "oldest" in card
        chart = page.split('id="event-log-backlog"')[1].split("</section>")[0]
        assert 'aria-label="Event log backlog by partition, in messages"' in chart
        assert chart.count('class="bar"') == partitions, "a column a partition"
        assert f"partition {first_partition} (tally.events.{first_partition}): 3 messages not yet counted" in chart
        assert f"<td><code>tally.events.{second_partition}</code></td><td>3</td>" in chart
    finally:
        for consumer in stack.consumers:
            os.kill(consumer.pid, signal.SIGCONT)
    assert wait_until(lambda: log_backlog(stack, stack.edges[0])["pending"] == 0), "the backlog drains"
    drained = log_gauges(stack.edges[1])
    assert set(drained["tally_event_log_pending"].values()) == {0.0}
    assert set(drained["tally_event_log_oldest_pending_seconds"].values()) == {0.0}

    assert log_backlog(stack, stack.direct) == {
        "state": "NOT_IN_USE",
        "pending": 0,
        "oldestPendingAgeMs": None,
        "partitions": [],
    }
    assert log_gauges(stack.direct) == {}
    started = time.monotonic()
    assert log_backlog(stack, stack.unreachable_log_edge)["state"] == "UNREACHABLE"
    assert time.monotonic() - started < 3, "reading an unreachable log is bounded"
    assert log_gauges(stack.unreachable_log_edge) == {"tally_event_log_reachable": {"": 0.0}}


def metering_page(stack: Stack, base_url: str) -> str:
    """The console's Metering page as a support user signed in on that server sees it."""
    email = "ops@example.com"
    created = subprocess.run(
        [str(TALLY), "user", "create", "--email", email, "--role", "support", "--password-stdin"],
        env=stack.env,
        input="a long enough passphrase\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0 or "already" in created.stderr, created.stderr
    with httpx.Client(base_url=base_url, timeout=30) as browser:
        form = browser.get("/console/login").text
        browser.post(
            "/console/login",
            data={
                "email": email,
                "password": "a long enough passphrase",
                "csrftoken": csrf_of(form),
                "next": "/console/metering",
            },
        )
        page = browser.get("/console/metering")
        assert page.status_code == 200 and "<h1>Metering</h1>" in page.text, page.text[:500]
        return page.text


def wait_until(condition: Callable[[], bool], *, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


#: A process that starts (or attaches to) an embedded PostgreSQL with the project's helper, prints
#: its URL and holds it until its stdin closes; being the only process attached, its exit stops it.
HOLD_POSTGRES = """
import pathlib, sys
from app.database import start_embedded_postgres
print(start_embedded_postgres(pathlib.Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


def hold_postgres(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_POSTGRES, str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    return holder, holder.stdout.readline().strip()


def release_postgres(holder: subprocess.Popen[str]) -> None:
    """Stop the held server (pg_ctl stop, as the helper does when its last process leaves)."""
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=60)


async def catalog_customer_and_tokens(url: str) -> tuple[str, str]:
    """The test catalog, the customer org_outage and an ingest and an admin token, in one go (no
    command-line process to start for each)."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            as_of = datetime.now(UTC)
            await apply_catalog(session, CATALOG, as_of=as_of)
            started = NOW - timedelta(days=1)
            new = NewCustomer("org_outage", "Outage", "USD", plan_key="metered", started_at=started)
            await create_customer(session, new, as_of=started)
            tokens = [
                (await create_token(session, role=role, customer_external_id=None, label=None, as_of=as_of)).token
                for role in ("ingest", "admin")
            ]
            await session.commit()
    finally:
        await engine.dispose()
    return tokens[0], tokens[1]


def test_postgres_down_for_30_seconds_the_edge_answers_200_the_backlog_grows_then_drains_once(
    tmp_path: Path,
) -> None:
    """A stack of its own (its PostgreSQL, its three NATS nodes, an edge and a consumer): with the
    database stopped for 30 s the edge answers every batch 200 (its token and meters from what it
    last read), and the log's backlog in /metrics grows in messages and in age at every scrape;
    once PostgreSQL is back every event is counted once and the backlog drains to 0."""
    own_cluster = local_cluster(
        tmp_path / "nats", client_ports=[free_port() for _ in range(3)], cluster_ports=[free_port() for _ in range(3)]
    )
    own_cluster.start_all()  # elects its leaders while PostgreSQL starts
    holder, server = hold_postgres(tmp_path / "pg")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        admin_execute(server, "CREATE DATABASE tally_outage")
        url = with_database(server, "tally_outage")
        migrate(url)
        env = {
            **server_env(url, tmp_path),
            "TALLY_NATS_URL": own_cluster.url,
            "TALLY_NATS_ACK_WAIT_SECONDS": "3",
            "TALLY_EVENTS_MAX_PER_REQUEST": str(MAX_PER_REQUEST),
        }
        ingest_token, admin_token = asyncio.run(catalog_customer_and_tokens(url))
        asyncio.run(wait_until_ready(log_config(Settings(nats_url=own_cluster.url))))
        edge_process, edge = _serve(env, tmp_path / "edge.log")
        processes.append(edge_process)
        consume_log = (tmp_path / "consume.log").open("a")
        processes.append(
            subprocess.Popen([str(TALLY), "consume"], env=env, stdout=consume_log, stderr=subprocess.STDOUT)
        )
        _wait_healthy([(edge_process, edge)], tmp_path)
        own = Stack(edge, [edge], edge, [], ingest_token, admin_token, admin_token, env, tmp_path)

        def send(batch: str, count: int) -> httpx.Response:
            events = [token_event(f"outage-{batch}-{n}", "org_outage", 1) for n in range(count)]
            return own.post(edge, json.dumps(events).encode())

        assert send("warm", 10).json()["accepted"] == 10
        assert wait_for_usage(own, {"org_outage": Decimal(10)}) == {"org_outage": Decimal(10)}

        release_postgres(holder)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()
        answers: list[int] = []
        scrapes: list[tuple[float, float]] = []  # messages pending, oldest age in seconds
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < 30:
            answered = send(f"down-{len(answers)}", 50)
            answers.append(answered.status_code)
            assert answered.status_code == 200, answered.text
            assert answered.json()["accepted"] == 50
            gauges = log_gauges(edge)
            assert gauges["tally_event_log_reachable"] == {"": 1.0}
            scrapes.append(
                (
                    sum(gauges["tally_event_log_pending"].values()),
                    max(gauges["tally_event_log_oldest_pending_seconds"].values()),
                )
            )
            time.sleep(1)
        assert len(answers) >= 15
        pending, ages = [p for p, _ in scrapes], [a for _, a in scrapes]
        assert pending == sorted(pending) and pending[-1] >= len(answers), "the backlog grows: a message a batch"
        assert ages == sorted(ages) and ages[-1] >= 25, "the lag is visible throughout, and grows"

        holder, restarted = hold_postgres(tmp_path / "pg")
        assert restarted == server
        expected = {"org_outage": Decimal(10 + 50 * len(answers))}
        assert wait_for_usage(own, expected, timeout=60) == expected
        assert wait_until(lambda: log_backlog(own, edge)["pending"] == 0), "the backlog drains"
        drained = log_gauges(edge)
        assert set(drained["tally_event_log_pending"].values()) == {0.0}
        assert set(drained["tally_event_log_oldest_pending_seconds"].values()) == {0.0}
        time.sleep(3.5)  # past the acknowledgement wait: nothing is delivered and counted again
        assert own.usage("org_outage") == expected["org_outage"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        own_cluster.stop()
        release_postgres(holder)
