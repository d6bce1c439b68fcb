"""Outbound webhooks through a real `tally serve` and a real receiver: events emitted, the server
killed with SIGKILL while its POSTs hang, restarted, and every event arrives (at least once) with
a valid signature; then an admin sees the endpoints and the deliveries (one endpoint failing) in
a real browser, and the pages are screenshotted."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.database import create_engine, session_factory
from app.staff import create_user
from notifications import webhook_endpoints as endpoints
from notifications.webhook_endpoints import EndpointInput
from notifications.webhook_events import Event, emit
from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import LiveServer, server_env, start_server
from tests.e2e.test_billing_console import signed_in_page
from tests.notifications.webhook_receiver import Receiver, serve, signature_valid

pytestmark = pytest.mark.e2e
EVENTS = 24
ADMIN, PASSWORD = "hooks-admin@example.com", "correct horse battery staple 42"


async def _prepare(url: str, receiver: Receiver) -> tuple[str, list[uuid.UUID]]:
    """An admin, two endpoints (one always failing) and the events; the working endpoint's secret."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    async with session_factory(engine)() as session:
        await create_user(session, email=ADMIN, role="admin", password=PASSWORD, as_of=now)
        working = await endpoints.create_endpoint(session, EndpointInput(receiver.url("/crm"), None, "CRM"), as_of=now)
        await endpoints.create_endpoint(
            session, EndpointInput(receiver.url("/down"), ("customer.updated",), "Analytics (down)"), as_of=now
        )
        secret = working.secret
        ids = []
        for number in range(EVENTS):
            data = {"id": f"cus_{number % 6}", "name": f"Customer {number}"}
            event = Event(f"e2e:{number}", "customer.updated", "Customer", f"cus_{number % 6}", data)
            created = await emit(session, event, as_of=now)
            assert created is not None
            ids.append(created)
        await session.commit()
    await engine.dispose()
    return secret, ids


def _wait_for(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_no_webhook_is_lost_across_a_kill_and_the_console_shows_the_deliveries(
    server_url: str, template_url: str, tmp_path: Path, browser
) -> None:
    url = clone_database(server_url, "tally_hooks_e2e")
    env = {
        **server_env(url, tmp_path),
        "TALLY_WEBHOOK_INTERVAL_SECONDS": "0.1",
        "TALLY_WEBHOOK_LEASE_SECONDS": "1",
        "TALLY_WEBHOOK_TIMEOUT_SECONDS": "5",
        "TALLY_WEBHOOK_RETRY_SCHEDULE_SECONDS": "[0.2, 0.5, 3600]",
    }
    receivers = serve(Receiver(mode="hang", hang_seconds=4, failing_paths={"/down"}))
    receiver = next(receivers)
    try:
        # In a thread of its own: Playwright's sync API holds this thread's event loop.
        with ThreadPoolExecutor(1) as pool:
            secret, sent = pool.submit(asyncio.run, _prepare(url, receiver)).result()
        first, _ = start_server(env, tmp_path / "first.log")
        try:
            assert _wait_for(lambda: len(receiver.requests("/crm")) >= 8, 15), "the first POSTs are under way"
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        cut_off = len(receiver.requests("/crm"))
        receiver.mode = "ok"
        second, base_url = start_server(env, tmp_path / "second.log")
        try:
            crm = lambda: {uuid.UUID(one.headers["webhook-id"]) for one in receiver.requests("/crm")}  # noqa: E731
            assert _wait_for(lambda: crm() == set(sent), 15), f"missing {len(set(sent) - crm())} events"
            assert len(receiver.requests("/crm")) > cut_off, "the hung POSTs were sent again after the restart"
            assert all(signature_valid(secret, one.headers, one.body) for one in receiver.requests("/crm"))
            versions = {one.document["resource"]["version"] for one in receiver.requests("/crm")}
            assert versions == {1, 2, 3, 4}  # 24 events over 6 customers

            server = LiveServer(base_url, ADMIN, PASSWORD, env, url)
            page = signed_in_page(browser, server)
            page.click("nav >> text=Webhooks")
            page.wait_for_url("**/console/webhooks")
            expect(page.locator("#endpoints tbody tr")).to_have_count(2)
            assert "every event" in page.locator("#endpoints").inner_text()
            page.screenshot(path=str(tmp_path / "webhooks.png"), full_page=True)
            page.click("text=/down")
            page.wait_for_url("**/console/webhooks/*")
            expect(page.locator("#deliveries")).to_contain_text("HTTP 500")
            page.locator("#deliveries details").first.click()
            expect(page.locator("#deliveries")).to_contain_text("receiver down")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(tmp_path / "webhook-endpoint.png"), full_page=True)
            page.close()
        finally:
            second.terminate()
            second.wait(timeout=20)
    finally:
        next(receivers, None)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_hooks_e2e WITH (FORCE)")
