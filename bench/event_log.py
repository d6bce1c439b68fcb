"""Ingestion through the replicated event log (issue 19) against the direct path, in one run on
one machine: a three-node JetStream cluster on loopback and an embedded PostgreSQL, started here.

  (a) direct: POST /v1/events to a normal `tally serve` (counted in PostgreSQL before answering),
      first and again last (the tables grow through the run): the baseline is the mean;
  (b) edge acceptance: the same requests to `tally serve` in edge mode (TALLY_NATS_URL), 1 and 2
      edge processes, no consumer running: events/s acknowledged by the log;
  (c) end to end: edges and 1, then 2, `tally consume` processes at once: events/s from the first
      request until PostgreSQL counted the last event;
  (d) a backlog of --backlog events, published while the consumers are stopped: how long 2
      consumers take to count it;
  (e) raw publish: the backlog's messages (exactly those an edge publishes for its batches:
      same subjects, payloads, headers) published straight from this process: the log's limit.

Every request is a batch of --batch distinct valid events of 1,000 customers, sent with httpx
by --clients concurrent clients, as real edges' producers send them.

    .venv/bin/python bench/event_log.py [--batches 100] [--backlog 1000000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.database import libpq_url
from app.nats_cluster import LocalCluster, local_cluster, wait_until_ready
from app.settings import Settings
from app.usage_ingest import ingest_limits, log_config
from bench._database import scratch_database
from bench._server import TALLY, cli, running_server
from metering.event_log import MSG_ID_HEADER, LogConfig, LogMessage, message_headers, messages_of
from metering.events import screen_events

CUSTOMERS = 1000
CATALOG = Path(__file__).resolve().parents[1] / "app" / "demo" / "catalog.toml"
progress = Progress(
    TextColumn("{task.description:<34}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    console=Console(stderr=True),
    transient=True,
)


def make_batches(prefix: str, batches: int, size: int, rng: random.Random) -> list[list[dict[str, Any]]]:
    """Distinct valid events (ids ``prefix-n``) of random customers, half of them token counts."""
    now = datetime.now(UTC)
    made = []
    for b in range(batches):
        batch = []
        for n in range(size):
            at = (now - timedelta(seconds=rng.randrange(3600))).isoformat()
            properties: dict[str, Any] = {"model": rng.choice(["fast-1", "large-1"])}
            if n % 2:
                properties["tokens"] = rng.randrange(1, 9000)
            batch.append(
                {
                    "id": f"{prefix}-{b * size + n}",
                    "customer": f"bench_{rng.randrange(CUSTOMERS)}",
                    "type": "llm.tokens" if n % 2 else "request.completed",
                    "timestamp": at,
                    "properties": properties,
                }
            )
        made.append(batch)
    return made


class CpuUse:
    """Where a phase's CPU went: the seconds of CPU each kind of process used between two
    snapshots, and the machine's whole (so whatever else ran shows as "other"). A process that
    exited during the phase loses its share to "other"."""

    KINDS = ("tally serve", "tally consume", "NATS nodes", "PostgreSQL", "bench client")

    def __init__(self) -> None:
        self.started = self._snapshot()

    @staticmethod
    def _kind(process: psutil.Process) -> str | None:
        if process.pid == os.getpid():
            return "bench client"
        name, command = process.name(), process.cmdline()
        if name == "postgres" or (command and command[0].endswith("postgres")):
            return "PostgreSQL"
        if name.startswith("nats-server"):
            return "NATS nodes"
        for position in (0, 1):  # `tally serve …`, or `python …/tally serve …`
            if len(command) > position + 1 and Path(command[position]).name == "tally":
                return f"tally {command[position + 1]}"
        return None

    def _snapshot(self) -> tuple[float, dict[int, tuple[str, float]]]:
        busy = psutil.cpu_times()
        machine = sum(busy) - busy.idle - getattr(busy, "iowait", 0.0)
        processes: dict[int, tuple[str, float]] = {}
        for process in psutil.process_iter():
            try:
                kind = self._kind(process)
                if kind in self.KINDS:
                    times = process.cpu_times()
                    processes[process.pid] = (kind, times.user + times.system)
            except psutil.Error:
                continue
        return machine, processes

    def since_start(self) -> dict[str, float]:
        """CPU seconds by kind since this was made, "other" and "machine" included."""
        (machine_before, before), (machine_after, after) = self.started, self._snapshot()
        used = dict.fromkeys(self.KINDS, 0.0)
        for pid, (kind, seconds) in after.items():
            used[kind] += seconds - (before[pid][1] if pid in before else 0.0)
        used["machine"] = machine_after - machine_before
        used["other"] = max(0.0, used["machine"] - sum(used[kind] for kind in self.KINDS))
        return used


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send_all(base_urls: list[str], token: str, bodies: list[bytes], clients: int, task: Any) -> tuple[float, int]:
    """Post every body (client n to server n mod len(base_urls)); seconds taken and events accepted."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def client(base_url: str) -> None:
        nonlocal accepted
        async with httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as http:
            while not queue.empty():
                response = await http.post("/v1/events", content=queue.get_nowait())
                response.raise_for_status()
                accepted += response.json()["accepted"]
                if task is not None:
                    progress.advance(task)

    started = time.perf_counter()
    await asyncio.gather(*(client(base_urls[n % len(base_urls)]) for n in range(clients)))
    return time.perf_counter() - started, accepted


class Counted:
    """Events PostgreSQL has counted: the sum of the accepted batches' counts (one small row per
    ingested request, so cheap to sum while ingestion runs)."""

    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(libpq_url(url), autocommit=True)

    def now(self) -> int:
        row = self.connection.execute("SELECT coalesce(sum(accepted), 0) FROM ingest_batches").fetchone()
        return int(row[0]) if row else 0

    def wait_for(self, target: int, task: Any, *, timeout: float = 1800) -> float:
        """Poll until ``target`` events are counted (the task's total being what is awaited); the
        moment (perf_counter) they were seen."""
        deadline = time.monotonic() + timeout
        before = target - int(progress.tasks[task].total or 0)
        while True:
            counted = self.now()
            progress.update(task, completed=counted - before)
            if counted >= target:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {counted:,} of {target:,} events counted after {timeout} s")
            time.sleep(0.1)


async def left_in_stream(config: LogConfig, *, wait_seconds: float = 10) -> int:
    """Messages the stream still holds once every event was counted: 0 as soon as the last
    acknowledgements (sent after each commit) reached it, else what remains after ``wait_seconds``."""
    client = await nats.connect(servers=list(config.servers))
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            left = int((await client.jetstream().stream_info(config.stream)).state.messages)
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def purge(config: LogConfig) -> None:
    client = await nats.connect(servers=list(config.servers))
    try:
        await client.jetstream().purge_stream(config.stream)
    finally:
        await client.close()


def edge_messages(
    batches: list[list[dict[str, Any]]], config: LogConfig, task: Any
) -> list[tuple[LogMessage, dict[str, str]]]:
    """What edges publish for these batches, each received at its own moment (checked as an edge
    without a catalog checks them)."""
    messages: list[tuple[LogMessage, dict[str, str]]] = []
    limits = ingest_limits(Settings())
    for batch in batches:
        received_at = datetime.now(UTC)
        screened = screen_events(batch, meters_by_event_type=None, received_at=received_at, limits=limits)
        events = [event for _, event in screened.passed]
        headers = message_headers(received_at, None)
        messages.extend((message, headers) for message in messages_of(events, config, max_payload=1024 * 1024))
        progress.advance(task)
    return messages


async def raw_publish(
    messages: list[tuple[LogMessage, dict[str, str]]], config: LogConfig, in_flight: int, task: Any
) -> float:
    """Publish ``messages`` from one client, ``in_flight`` awaiting their acknowledgement at once;
    the seconds until the last was acknowledged."""
    client = await nats.connect(servers=list(config.servers))
    jetstream = client.jetstream(timeout=30)
    slots = asyncio.Semaphore(in_flight)

    async def publish(message: LogMessage, headers: dict[str, str]) -> None:
        async with slots:
            await jetstream.publish(
                message.subject,
                message.payload,
                stream=config.stream,
                headers={**headers, MSG_ID_HEADER: message.msg_id},
            )
        progress.advance(task, message.events)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(publish(message, headers) for message, headers in messages))
        return time.perf_counter() - started
    finally:
        await client.close()


@contextmanager
def consumer(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as output:
        process = subprocess.Popen([str(TALLY), "consume"], env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
            process.wait(timeout=30)


@contextmanager
def nats_cluster(data_dir: Path) -> Iterator[LocalCluster]:
    cluster = local_cluster(
        data_dir, client_ports=[free_port() for _ in range(3)], cluster_ports=[free_port() for _ in range(3)]
    )
    cluster.start_all()
    try:
        # Until the nodes elected their leaders, each attempt logs a warning: expected here.
        logging.getLogger("tally.event_log").setLevel(logging.ERROR)
        asyncio.run(wait_until_ready(log_config(Settings(nats_url=cluster.url))))
        yield cluster
    finally:
        cluster.stop()


def seed(url: str, data_dir: Path) -> str:
    """The demo catalog, the customers, and an ingest token."""
    cli(url, data_dir, "catalog", "apply", str(CATALOG))
    with (
        psycopg.connect(libpq_url(url)) as connection,
        connection.cursor().copy(
            "COPY customers (id, external_id, name, currency, status, created_at) FROM STDIN"
        ) as copy,
    ):
        for index in range(CUSTOMERS):
            copy.write_row((uuid.uuid4(), f"bench_{index}", f"Bench {index}", "USD", "ACTIVE", datetime.now(UTC)))
    return cli(url, data_dir, "token", "create", "--role", "ingest")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1)
    results: dict[str, Any] = {
        "batch": args.batch,
        "batches": args.batches,
        "clients": args.clients,
        "direct_processes": args.direct_processes,
        "backlog": args.backlog,
        "consume_batch": args.consume_batch,
        "consume_linger_ms": args.consume_linger_ms,
        "load_average_before": os.getloadavg()[0],
    }
    phase_events = args.batch * args.batches
    with tempfile.TemporaryDirectory(prefix="tally-bench-log-") as tmp, scratch_database() as url, ExitStack() as stack:
        root = Path(tmp)
        token = seed(url, root)
        cluster = stack.enter_context(nats_cluster(root / "nats"))
        config = log_config(Settings(nats_url=cluster.url))
        counted = Counted(url)
        stack.callback(counted.connection.close)

        def bodies(prefix: str, count: int = args.batches) -> list[bytes]:
            return [json.dumps(batch).encode() for batch in make_batches(prefix, count, args.batch, rng)]

        cpu_per_event: dict[str, dict[str, float]] = results.setdefault("cpu_us_per_event", {})

        def per_event(cpu: CpuUse, events: int) -> dict[str, float]:
            return {kind: seconds * 1e6 / events for kind, seconds in cpu.since_start().items()}

        def server(name: str, *serve_args: str, **env: str) -> str:
            (root / name).mkdir()
            return stack.enter_context(running_server(url, root / name, *serve_args, TALLY_TRACING="false", **env))

        def measure(name: str, base_urls: list[str], prefix: str) -> float:
            """Send a warm-up request to each server, then the phase's batches: accepted events/s."""
            asyncio.run(send_all(base_urls, token, bodies(f"{prefix}-warm", len(base_urls)), len(base_urls), None))
            task = progress.add_task(name, total=args.batches)
            phase = bodies(prefix)
            cpu = CpuUse()
            seconds, accepted = asyncio.run(send_all(base_urls, token, phase, args.clients, task))
            if accepted != phase_events:
                raise RuntimeError(f"{name}: {accepted:,} of {phase_events:,} events accepted")
            cpu_per_event[name] = per_event(cpu, accepted)
            return accepted / seconds

        with progress:
            # (a) the direct path: one `tally serve` with its jobs (its roller stays up for the rest),
            # the others API processes, as the edges are (rather than `--workers N` behind one port,
            # whose supervisor kills a worker that is slow to answer its health check on a loaded machine).
            direct = [
                server(f"direct-{n}", *(() if n == 1 else ("--no-jobs",)), "--workers", "1")
                for n in range(1, args.direct_processes + 1)
            ]
            results["direct_first"] = measure(f"(a) direct, {args.direct_processes} processes", direct, "direct")

            # (b) edges only: what the log acknowledges.
            edge_env = {"TALLY_NATS_URL": cluster.url}
            edges = [server(f"edge-{n}", "--no-jobs", "--workers", "1", **edge_env) for n in (1, 2)]
            results["edge_1"] = measure("(b) edge acceptance, 1 edge", edges[:1], "edge1")
            results["edge_2"] = measure("(b) edge acceptance, 2 edges", edges, "edge2")
            asyncio.run(purge(config))

            # (c) end to end: edges and consumers at once, until PostgreSQL counted the last event.
            consumer_env = {
                **os.environ,
                "DATABASE_URL": url,
                "TALLY_DATA_DIR": str(root),
                "TALLY_TRACING": "false",
                "TALLY_NATS_CONSUME_BATCH": str(args.consume_batch),
                "TALLY_NATS_CONSUME_LINGER_MS": str(args.consume_linger_ms),
                **edge_env,
            }
            consumers: list[subprocess.Popen[bytes]] = []
            e2e_edges = edges[: args.e2e_edges]
            for n in (1, 2):
                consumers.append(stack.enter_context(consumer(consumer_env, root / f"consume-{n}.log")))
                warm = bodies(f"e2e{n}-warm", 2)
                target = counted.now() + len(warm) * args.batch
                asyncio.run(send_all(e2e_edges, token, warm, 1, None))
                counted.wait_for(target, progress.add_task("consumer warm-up", total=len(warm) * args.batch))
                target = counted.now() + phase_events
                phase = bodies(f"e2e{n}")
                name = f"(c) end to end, {n} consumer(s)"
                task = progress.add_task(name, total=phase_events)
                cpu = CpuUse()
                started = time.perf_counter()
                asyncio.run(send_all(e2e_edges, token, phase, args.clients, None))
                results[f"end_to_end_{n}"] = phase_events / (counted.wait_for(target, task) - started)
                cpu_per_event[name] = per_event(cpu, phase_events)

            # (e) raw publish of the backlog's messages while the consumers are stopped ...
            task = progress.add_task("building the backlog's messages", total=args.backlog // args.batch)
            backlog = edge_messages(make_batches("backlog", args.backlog // args.batch, args.batch, rng), config, task)
            backlog_events = sum(message.events for message, _ in backlog)
            for process in consumers:
                os.kill(process.pid, signal.SIGSTOP)
            task = progress.add_task("(e) raw JetStream publish", total=backlog_events)
            seconds = asyncio.run(raw_publish(backlog, config, args.in_flight, task))
            results["raw_publish"] = backlog_events / seconds
            results["backlog_messages"] = len(backlog)
            del backlog

            # (d) ... then the time they take to count it.
            target = counted.now() + backlog_events
            task = progress.add_task(f"(d) draining {backlog_events:,} events", total=backlog_events)
            cpu = CpuUse()
            started = time.perf_counter()
            for process in consumers:
                os.kill(process.pid, signal.SIGCONT)
            results["drain_seconds"] = counted.wait_for(target, task) - started
            cpu_per_event["(d) backlog drain"] = per_event(cpu, backlog_events)
            results["drain_rate"] = backlog_events / results["drain_seconds"]
            results["left_in_stream"] = asyncio.run(left_in_stream(config))

            # (a) again: the tables grew through the run (each phase's events stay), and a write into
            # a larger index costs more, so the direct path is measured last too; the baseline is
            # the mean of its two rates, taken on either side of the log's phases.
            results["direct_last"] = measure("(a) direct again, last", direct, "direct-last")
            results["direct"] = (results["direct_first"] + results["direct_last"]) / 2
        results["load_average_after"] = os.getloadavg()[0]
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    direct, raw = results["direct"], results["raw_publish"]

    def line(label: str, rate: float) -> None:
        print(f"  {label:<44} {rate:>9,.0f} events/s  {rate / direct:5.2f}x direct  {rate / raw:6.3f}x raw publish")

    print(
        f"event log: batches of {args.batch:,} events of {CUSTOMERS:,} customers, {args.batches} per phase, "
        f"{args.clients} httpx clients; 3-node JetStream (R3, 8 partitions) and PostgreSQL on this machine "
        f"({os.cpu_count()} cores, load average {results['load_average_before']:.1f} before, "
        f"{results['load_average_after']:.1f} after)"
    )
    line(f"(a) direct path ({args.direct_processes} processes), first", results["direct_first"])
    line("(a) direct path, last", results["direct_last"])
    line("(a) direct path, mean: the baseline", direct)
    line("(b) edge acceptance, 1 edge process", results["edge_1"])
    line("(b) edge acceptance, 2 edge processes", results["edge_2"])
    line(f"(c) end to end, {args.e2e_edges} edge(s), 1 consumer", results["end_to_end_1"])
    line(f"(c) end to end, {args.e2e_edges} edge(s), 2 consumers", results["end_to_end_2"])
    line(f"(d) backlog drain, 2 consumers ({results['drain_seconds']:.1f} s)", results["drain_rate"])
    line(f"(e) raw JetStream publish ({results['backlog_messages']:,} messages)", raw)
    best_edge = max(results["edge_1"], results["edge_2"])
    best_e2e = max(results["end_to_end_1"], results["end_to_end_2"])
    print(
        f"  goal: edge acceptance ≥ 2x direct: {best_edge / direct:.2f}x ({'met' if best_edge >= 2 * direct else 'not met'}); "
        f"end to end ≥ direct: {best_e2e / direct:.2f}x ({'met' if best_e2e >= direct else 'not met'})"
    )
    kinds = [*CpuUse.KINDS, "other", "machine"]
    print("  CPU per event (µs of one core), by process:")
    print(f"  {'phase':<38}" + "".join(f"{kind:>15}" for kind in kinds))
    for phase, used in results["cpu_us_per_event"].items():
        print(f"  {phase:<38}" + "".join(f"{used[kind]:>15.1f}" for kind in kinds))
    if results["left_in_stream"]:
        print(f"  warning: {results['left_in_stream']} messages still in the stream after the drain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="requests per measured phase (default 100)")
    parser.add_argument("--batch", type=int, default=1000, help="events per request (default 1,000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent httpx clients (default 4)")
    parser.add_argument("--direct-processes", type=int, default=2, help="`tally serve` processes of the direct path")
    parser.add_argument("--e2e-edges", type=int, choices=(1, 2), default=2, help="edge processes in phase (c)")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="events of the backlog (default 1,000,000)")
    parser.add_argument(
        "--consume-batch",
        type=int,
        default=Settings().nats_consume_batch,
        help="messages a consumer counts in one transaction",
    )
    parser.add_argument(
        "--consume-linger-ms",
        type=int,
        default=Settings().nats_consume_linger_ms,
        help="how long a consumer waits to fill a batch",
    )
    parser.add_argument("--in-flight", type=int, default=64, help="raw publishes awaiting acknowledgement at once")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()
    results = run(args)
    rates = [
        "direct",
        "direct_first",
        "direct_last",
        "edge_1",
        "edge_2",
        "end_to_end_1",
        "end_to_end_2",
        "drain_rate",
        "raw_publish",
    ]
    results["to_direct"] = {name: results[name] / results["direct"] for name in rates}
    results["to_raw_publish"] = {name: results[name] / results["raw_publish"] for name in rates}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results, args)


if __name__ == "__main__":
    main()
