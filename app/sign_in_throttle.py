"""Sign-in attempts are throttled by client address and by email, before any password is checked.

An argon2 check costs tens of milliseconds of CPU and 64 MiB of memory on purpose, so a client
that may ask for as many as it likes can take the server's CPU from everyone. Each attempt
counts against its client address (an IPv6 address counts as its /64, which one client
usually holds whole) and against the email it names, whether a user has that email or not (so
the throttle neither spares unknown emails nor tells which emails exist). An attempt over either
limit is answered 429 at once, with the seconds to wait.

The counts are moving windows kept in memory (the ``limits`` library), per server process: with
``--workers N`` a client may make N times as many attempts. The lockout of a known account
after repeated failures (``app.staff``) still applies, and is kept in the database.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SIGN_IN_PATH = "/console/login"
MAX_HELD_REFUSALS = 256


def address_key(host: str | None) -> str:
    """The client as the throttle counts it: its IPv4 address, or its IPv6 /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SignInThrottle:
    def __init__(self, *, per_address: str, per_email: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_address = parse(per_address)
        self._per_email = parse(per_email)

    def address_wait(self, host: str | None) -> int | None:
        """Seconds until the address may try again, or None when it may now (nothing counted)."""
        key = address_key(host)
        if self._limiter.test(self._per_address, "address", key):
            return None
        return self._wait(self._per_address, "address", key)

    def admit(self, host: str | None, email: str) -> int | None:
        """Count an attempt: None when it may go on, else the seconds until one would be admitted."""
        address = address_key(host)
        if not self._limiter.hit(self._per_address, "address", address):
            return self._wait(self._per_address, "address", address)
        normalized = email.strip().lower()
        if not self._limiter.hit(self._per_email, "email", normalized):
            return self._wait(self._per_email, "email", normalized)
        return None

    def _wait(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))


class SignInFloodGuard:
    """Answers 429 to a sign-in from an address that is over its limit, before its body is read,
    its form parsed, a span recorded or a page rendered: a flood costs the server as little as it
    can. The answer waits ``refusal_delay_seconds`` first, so that a client sending one attempt
    after another on each connection makes about one a second per connection rather than as many
    as the server can answer; at most ``MAX_HELD_REFUSALS`` wait at once (more are answered at
    once), so that holding them cannot exhaust the process's sockets."""

    def __init__(self, app: ASGIApp, *, throttle: SignInThrottle, refusal_delay_seconds: float) -> None:
        self.app = app
        self.throttle = throttle
        self.refusal_delay_seconds = refusal_delay_seconds
        self.held = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == SIGN_IN_PATH:
            client = scope.get("client")
            wait = self.throttle.address_wait(client[0] if client else None)
            if wait is not None:
                await self._refuse(wait, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, wait: int, scope: Scope, receive: Receive, send: Send) -> None:
        if self.held < MAX_HELD_REFUSALS:
            self.held += 1
            try:
                await asyncio.sleep(self.refusal_delay_seconds)
            finally:
                self.held -= 1
        page = (
            "<!doctype html><title>Too many sign-in attempts</title>"
            f"<p>Too many sign-in attempts. Try again in {wait} seconds: "
            f'<a href="{SIGN_IN_PATH}">sign in</a>.</p>'
        )
        await HTMLResponse(page, status_code=429, headers={"Retry-After": str(wait)})(scope, receive, send)
