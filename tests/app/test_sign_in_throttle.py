"""Sign-ins are throttled by address and by email (known or not), and password checks never run
on the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from app.main import create_app
from app.settings import Settings
from app.sign_in_throttle import address_key
from app.staff import _UNKNOWN_USER_HASH, _matches, create_user
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def throttled_app(settings: Settings, database_url: str, session: AsyncSession) -> AsyncIterator[FastAPI]:
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    await session.commit()
    tight = settings.model_copy(update={"login_rate_per_email": "3/minute", "login_rate_per_address": "8/minute"})
    application = create_app(tight, database_url)
    async with application.router.lifespan_context(application):
        yield application


def client_at(application: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://tally.test")


async def test_sign_ins_for_one_email_are_throttled_whether_it_exists_or_not(throttled_app: FastAPI) -> None:
    for number, email in enumerate(("nobody@example.com", "cs@example.com")):
        async with client_at(throttled_app, f"10.0.0.{number + 1}") as http:
            for _ in range(3):
                assert (await sign_in(http, email, "wrong password!!")).status_code == 401
            throttled = await sign_in(http, email, PASSWORD)
            assert throttled.status_code == 429, email
            assert "Too many sign-in attempts" in throttled.text
            assert 0 < int(throttled.headers["retry-after"]) <= 60
        async with client_at(throttled_app, "10.0.0.9") as elsewhere:
            assert (await sign_in(elsewhere, email.upper(), PASSWORD)).status_code == 429, "the email, from anywhere"
    async with client_at(throttled_app, "10.0.0.10") as http:
        assert (await sign_in(http, "other@example.com", "wrong password!!")).status_code == 401


async def test_sign_ins_from_one_address_are_refused_before_their_form_is_read(throttled_app: FastAPI) -> None:
    async with client_at(throttled_app, "192.0.2.7") as http:
        for number in range(8):
            assert (await sign_in(http, f"guess{number}@example.com", "wrong password!!")).status_code == 401
        refused = await http.post("/console/login", content=b"not even a form")  # no CSRF token either
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
    async with client_at(throttled_app, "192.0.2.8") as neighbour:
        assert (await sign_in(neighbour, "cs@example.com", PASSWORD)).status_code == 303


def test_an_ipv6_client_counts_as_its_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1") == "192.0.2.1"
    assert address_key(None) == "unknown"


async def test_password_checks_leave_the_event_loop_free(client: httpx.AsyncClient) -> None:
    """While sign-ins are checked, the event loop keeps its pace: no pause as long as a check."""
    started = time.perf_counter()
    _matches(_UNKNOWN_USER_HASH, "a wrong password")
    one_check = time.perf_counter() - started
    page = await client.get("/console/login")
    token = csrf_of(page.text)
    worst_lag = 0.0

    async def tick() -> None:
        nonlocal worst_lag
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.002)
            worst_lag = max(worst_lag, time.perf_counter() - before - 0.002)

    ticker = asyncio.create_task(tick())
    attempts = [
        client.post(
            "/console/login",
            data={"email": f"nobody{n}@example.com", "password": "wrong password!!", "csrftoken": token},
        )
        for n in range(3)
    ]
    answers = await asyncio.gather(*attempts)
    ticker.cancel()
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert worst_lag < one_check / 2, f"the loop paused {worst_lag * 1000:.0f} ms; a check takes {one_check * 1000:.0f}"
