"""A real `tally serve` on a free port over its own database, and a real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_CATALOG, admin_execute, clone_database

TALLY = Path(sys.executable).with_name("tally")


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    admin_email: str
    admin_password: str
    env: dict[str, str]
    database_url: str

    def cli(self, *args: str) -> str:
        result = subprocess.run([str(TALLY), *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], log_path: Path, *serve_args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`tally serve` on a free port, once it answers /healthz."""
    port = free_port()
    log = log_path.open("a")
    process = subprocess.Popen(
        [str(TALLY), "serve", "--port", str(port), *serve_args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"tally serve did not start:\n{log_path.read_text()}")
        time.sleep(0.2)


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "TALLY_DATA_DIR": str(data_dir),
        "TALLY_ENV": "test",
        "TALLY_SECRET_KEY": "live-server-test-secret",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }


@contextmanager
def catalog_server(
    server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *serve_args: str,
    more_catalog: str | None = None,
) -> Iterator[LiveServer]:
    """A server of a module's own over database ``name``, with the demo catalog (and
    ``more_catalog`` applied after it) and no customers: journeys that add customers would change
    what the shared live server's journeys count."""
    url = clone_database(server_url, name)
    data_dir = tmp_path_factory.mktemp(name)
    env = server_env(url, data_dir)
    catalogs = [DEMO_CATALOG]
    if more_catalog is not None:
        catalogs.append(data_dir / "more-catalog.toml")
        catalogs[-1].write_text(more_catalog)
    for catalog in catalogs:
        subprocess.run([str(TALLY), "catalog", "apply", str(catalog)], env=env, capture_output=True, check=True)
    process, base_url = start_server(env, data_dir / "serve.log", *serve_args)
    try:
        yield LiveServer(base_url, "", "", env, url)
    finally:
        process.terminate()
        process.wait(timeout=20)
        admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def graphql_data(server: LiveServer, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a GraphQL request that must succeed (HTTP 200, no ``errors``)."""
    response = httpx.post(
        f"{server.base_url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


@pytest.fixture(scope="session")
def live_server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = clone_database(server_url, "tally_live")
    data_dir = tmp_path_factory.mktemp("live-data")
    env = server_env(url, data_dir)
    demo = json.loads(
        subprocess.run(
            [str(TALLY), "demo", "--json"], env=env, capture_output=True, text=True, timeout=300, check=True
        ).stdout
    )
    process, base_url = start_server(env, data_dir / "serve.log")
    yield LiveServer(base_url, demo["adminEmail"], demo["adminPassword"], env, url)
    process.terminate()
    process.wait(timeout=20)
    admin_execute(server_url, "DROP DATABASE IF EXISTS tally_live WITH (FORCE)")


def chromium_executable() -> str | None:
    """Debian's chromium (as CI installs it), or TALLY_CHROMIUM; None lets Playwright use its own."""
    configured = os.environ.get("TALLY_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API holds an event loop while it runs, which async tests
    in other modules must not find running."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_executable(),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


#: Where browser tests keep the screenshots a person looks at (kept after the run; CI may archive
#: it): ``TALLY_SCREENSHOTS`` or ``test-artifacts/screenshots`` in the checkout.
SCREENSHOTS = Path(
    os.environ.get("TALLY_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots")
)
#: The two sizes every console page is looked at: a laptop, and a phone.
SCREEN_SIZES = {"desktop": (1440, 900), "phone": (390, 844)}


#: The element that makes the page wider than the window (a sideways scroll of the whole page), or
#: null: a phone user must never have to scroll the page sideways (a wide table scrolls itself).
WIDEST_ELEMENT = """() => {
  const limit = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= limit) return null;
  let widest = null;
  for (const element of document.body.querySelectorAll('*')) {
    const right = element.getBoundingClientRect().right;
    if (right > limit + 1 && (!widest || right > widest.right)) {
      widest = {right, name: element.tagName.toLowerCase() + (element.id ? '#' + element.id : '')
        + (element.className && typeof element.className === 'string' ? '.' + element.className.split(' ').join('.') : '')};
    }
  }
  return widest ? `${widest.name} (its right edge at ${Math.round(widest.right)} px)` : 'an unknown element';
}"""


def screenshot_both_sizes(page: Any, name: str) -> list[Path]:
    """Screenshot the page (full length) at the desktop and the phone size, back at the size it
    had; the files are ``<name>-desktop.png`` and ``<name>-phone.png`` in :data:`SCREENSHOTS`.
    Fails when the page is wider than the window at either size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    taken = []
    for size_name, (width, height) in SCREEN_SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        path = SCREENSHOTS / f"{name}-{size_name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        widest = page.evaluate(WIDEST_ELEMENT)
        assert widest is None, f"{name} at {width} px: the page scrolls sideways because of {widest}"
    if before:
        page.set_viewport_size(before)
    return taken
