"""Run `tally serve` over a benchmark's database, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TALLY = Path(sys.executable).with_name("tally")


@contextmanager
def running_server(database_url: str, data_dir: Path, *serve_args: str, **extra_env: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "TALLY_DATA_DIR": str(data_dir), **extra_env}
    log = (data_dir / "serve.log").open("w")
    process = subprocess.Popen(
        [str(TALLY), "serve", "--port", str(port), *serve_args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "serve.log").read_text())
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def cli(database_url: str, data_dir: Path, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "TALLY_DATA_DIR": str(data_dir)}
    return subprocess.run([str(TALLY), *args], env=env, capture_output=True, text=True, check=True).stdout.strip()
