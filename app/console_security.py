"""The console's browser-facing protections, as two ASGI middlewares.

``SecurityHeaders`` adds the headers that keep pages out of frames, caches and other sites'
referrers. ``ConsoleCsrf`` refuses every state-changing console request that does not carry the
CSRF token of its session, whatever else it carries (a ``Bearer`` header included: the console
never reads one, so it must not switch the check off).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.console_sessions import SESSION_KEY

CONSOLE_PREFIX = "/console"
# Pages that may show data are never stored by a browser or a proxy; scripts only from Tally
# itself; inline style attributes are allowed (the trace waterfall and charts are drawn with them).
CONSOLE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
}
EVERY_RESPONSE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=31536000"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
CSRF_FORM_FIELD = "csrftoken"
CSRF_HEADER = b"x-csrftoken"
# The anonymous half of a sign-in form's token, kept in the signed cookie until sign-in replaces it.
ANONYMOUS_KEY = "csrf_seed"
# A console form is a few fields; a bigger urlencoded body is refused before it is read on.
CSRF_FORM_MAX_BYTES = 1024 * 1024


def is_console(scope: Scope) -> bool:
    path: str = scope["path"]
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


class SecurityHeaders:
    """X-Frame-Options, nosniff and Referrer-Policy on every response; on console responses also
    ``Cache-Control: no-store`` and a Content-Security-Policy (with ``frame-ancestors 'none'``);
    HSTS when the request came over HTTPS or console cookies are HTTPS-only."""

    def __init__(self, app: ASGIApp, *, hsts_always: bool) -> None:
        self.app = app
        self.hsts_always = hsts_always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = dict(EVERY_RESPONSE_HEADERS)
        if is_console(scope):
            extra.update(CONSOLE_HEADERS)
        if self.hsts_always or scope.get("scheme") == "https":
            extra["Strict-Transport-Security"] = HSTS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(secret: str, session: MutableMapping[str, Any]) -> str:
    """The CSRF token of this cookie session: an HMAC of the server-side session id once signed in;
    before that, of a random seed kept in the signed cookie (made here on first use)."""
    if session.get(SESSION_KEY):
        bound_to = f"session:{session[SESSION_KEY]}"
    else:
        if not session.get(ANONYMOUS_KEY):
            session[ANONYMOUS_KEY] = secrets.token_urlsafe(16)
        bound_to = f"anonymous:{session[ANONYMOUS_KEY]}"
    return hmac.new(secret.encode(), f"console-csrf:{bound_to}".encode(), hashlib.sha256).hexdigest()


class ConsoleCsrf:
    """Console POSTs (and any other unsafe method) need the session's CSRF token, in the
    ``X-CSRFToken`` header (htmx sends it) or the ``csrftoken`` field of a urlencoded form.
    Runs inside the session middleware; pages get the token from ``scope["csrftoken"]()``."""

    def __init__(self, app: ASGIApp, *, secret: str) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console(scope):
            await self.app(scope, receive, send)
            return
        session = scope["session"]
        scope["csrftoken"] = lambda: csrf_token(self.secret, session)
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        # Only a session that already has a token can send it: a new seed would match nothing.
        expected = csrf_token(self.secret, session) if session.get(SESSION_KEY) or session.get(ANONYMOUS_KEY) else None
        headers = dict(scope["headers"])
        sent = headers.get(CSRF_HEADER, b"").decode("latin-1")
        if expected and sent and hmac.compare_digest(sent, expected):
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if content_type != b"application/x-www-form-urlencoded":
            await refuse(send, 403, "CSRF check failed: send the page's form (reload it and try again).")
            return
        body, replay = await read_body(receive, limit=CSRF_FORM_MAX_BYTES)
        if body is None:
            await refuse(send, 413, "The form is too large.")
            return
        fields = dict(parse_qsl(body.decode("latin-1")))
        if expected and hmac.compare_digest(fields.get(CSRF_FORM_FIELD, ""), expected):
            await self.app(scope, replay, send)
            return
        await refuse(send, 403, "CSRF check failed: send the page's form (reload it and try again).")


async def read_body(receive: Receive, *, limit: int) -> tuple[bytes | None, Receive]:
    """The whole request body (None past ``limit`` bytes), and a receive that replays it."""
    messages: list[Message] = []
    size = 0
    more = True
    while more:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit:
            return None, receive
        more = message.get("more_body", False)

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request"), replay


async def refuse(send: Send, status: int, reason: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": reason.encode()})
