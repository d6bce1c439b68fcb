"""What a request must be before Tally handles it, and how long handling it may take.

Two ASGI middlewares, outside everything else the application does:

- :class:`RequestIntake` reads each request's body whole before the application sees the
  request: within its route's size limit (a declared ``Content-Length`` over it is refused
  before a byte is read; a body without one is counted as it arrives) and within the read
  timeout. A slow or oversized upload is therefore answered 408/413 without ever taking a
  database connection, a session, or more memory than its limit. A URL holding a NUL character
  (which no PostgreSQL text can store) is refused here too.
- :class:`RequestDeadline` answers a JSON 503 when the application has not started its response
  within the request timeout (the database's own ``statement_timeout`` is shorter, so a slow
  query normally ends first, with its own answer).

Both answer JSON ``{"code", "message"}`` like every other refusal of the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class BodyLimits:
    """The largest body, in bytes, of each path that takes one; ``default`` for every other."""

    default: int
    by_path: Mapping[str, int]

    def for_path(self, path: str) -> int:
        return self.by_path.get(path.rstrip("/") or "/", self.default)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def refusal(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """A refusal sent before the body was read: the connection is closed after it, since what
    remains of the body would otherwise be read as the next request."""
    return JSONResponse(
        {"code": code, "message": message}, status_code=status, headers={"Connection": "close", **headers}
    )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestIntake:
    """Reads and bounds every request body before the application handles the request."""

    def __init__(self, app: ASGIApp, *, limits: BodyLimits, read_timeout_seconds: float) -> None:
        self.app = app
        self.limits = limits
        self.read_timeout_seconds = read_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
            await refusal(400, "INVALID_INPUT", "the URL holds a NUL character")(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._too_large(limit, scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.read_timeout_seconds):
                body = await self._read_body(receive, limit)
        except _BodyTooLarge:
            await self._too_large(limit, scope, receive, send)
            return
        except TimeoutError:
            message = f"the request body did not arrive within {self.read_timeout_seconds:g} seconds"
            await refusal(408, "BODY_READ_TIMEOUT", message)(scope, receive, send)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise _BodyTooLarge
            if not message.get("more_body", False):
                return bytes(body)

    @staticmethod
    async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the body exceeds {limit} bytes; send smaller requests"
        await refusal(413, "BODY_TOO_LARGE", message)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the client's own messages (a disconnect, when it comes)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class RequestDeadline:
    """A request whose response has not started within ``timeout_seconds`` is cancelled and
    answered 503 ``REQUEST_TIMEOUT``; once the response has started, it is left to finish."""

    def __init__(self, app: ASGIApp, *, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        try:
            async with asyncio.timeout(self.timeout_seconds) as deadline:

                async def send_and_note_start(message: Message) -> None:
                    nonlocal started
                    if message["type"] == "http.response.start":
                        started = True
                        deadline.reschedule(None)
                    await send(message)

                await self.app(scope, receive, send_and_note_start)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            message = f"the request took longer than {self.timeout_seconds:g} seconds; try again"
            await JSONResponse({"code": "REQUEST_TIMEOUT", "message": message}, status_code=503)(scope, receive, send)
