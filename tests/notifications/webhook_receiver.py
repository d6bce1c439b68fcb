"""A real HTTP receiver for outbound webhooks: a bare ASGI app served by uvicorn on a free port in
a thread of the test process. It verifies each request's signature with its own implementation
of the Standard Webhooks specification (hmac, hashlib, base64: not the library Tally signs with),
records what it got, and can be told to fail (500), hang (answer after the sender's timeout) or
recover."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def signature_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The spec: HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}`` with the base64-decoded
    part of the secret after ``whsec_``; the header lists ``v1,<base64>`` signatures separated by
    spaces, and one matching is enough."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    offered = [entry.split(",", 1) for entry in headers["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(expected, value.encode()) for version, value in offered)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def document(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


@dataclass
class Receiver:
    """``mode`` says how the next requests are answered; ``received`` keeps every request, in order."""

    port: int = 0
    mode: Literal["ok", "fail", "hang"] = "ok"
    hang_seconds: float = 2.0
    failing_paths: set[str] = field(default_factory=set)  # always answered 500, whatever the mode
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [one for one in self.received if path is None or one.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender died before its body was complete: like any receiver, process nothing
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        with self.lock:
            self.received.append(Received(scope["path"], headers, body, time.monotonic()))
        mode = "fail" if scope["path"] in self.failing_paths else self.mode
        if mode == "hang":
            await asyncio.sleep(self.hang_seconds)
        status, answer = (500, b"receiver down") if mode == "fail" else (200, b'{"ok":true}')
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": answer})


def serve(receiver: Receiver) -> Iterator[Receiver]:
    receiver.port = free_port()
    config = uvicorn.Config(
        receiver, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=5)
