"""A lean HTTP/1.1 client for latency benchmarks: one keep-alive connection, h11 for the protocol.

httpx spends about 1–2 ms of Python per request on this machine, on the same two cores as the
server, which is the client's cost and not the server's. A load tool such as ``wrk`` costs next to
nothing; this is the closest in Python: the request's bytes written, the answer parsed by h11.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import h11


class KeepAliveClient:
    """Requests one after another over one connection (open it per concurrent caller)."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._headers = [("host", f"{self._host}:{self._port}"), *headers.items()]
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connection = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> KeepAliveClient:
        await self._connect()
        return self

    async def _connect(self) -> None:
        """A new connection: also when the server closed an idle one (uvicorn does after 5 s)."""
        if self._writer is not None:
            self._writer.close()
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._connection = h11.Connection(h11.CLIENT)

    async def __aexit__(self, *_: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and the decoded JSON answer."""
        assert self._reader is not None, "use the client in `async with`"
        if self._reader.at_eof():
            await self._connect()
        assert self._reader is not None and self._writer is not None
        content = json.dumps(body).encode() if body is not None else b""
        headers = [*self._headers, ("content-length", str(len(content)))]
        if body is not None:
            headers.append(("content-type", "application/json"))
        self._writer.write(self._connection.send(h11.Request(method=method, target=path, headers=headers)))
        self._writer.write(self._connection.send(h11.Data(data=content)) + self._connection.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = self._connection.next_event()
            if event is h11.NEED_DATA:
                self._connection.receive_data(await self._reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._connection.start_next_cycle()
                return status, json.loads(b"".join(chunks)) if chunks else None
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
