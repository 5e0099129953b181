"""The smallest HTTP/1.1 server that the memory runtime's services need.

One request per connection (`Connection: close`), a body only by Content-Length: enough
for the lab's proxy, its health prober and the tests' httpx clients, and nothing that
needs a package or a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

#: Most bytes of a request's line and headers, and of its body.
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain"
    #: Called once the response is written (a service that exits after answering).
    after: Callable[[], None] | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        reason = HTTPStatus(self.status).phrase
        head = (
            f"HTTP/1.1 {self.status} {reason}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("latin-1") + body


App = Callable[[Request], Awaitable[Response]]


async def serve(app: App, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve `app` on a free port of `host` (`server.sockets[0]` tells which)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            response = await app(request) if request else Response(400, "bad request")
            writer.write(response.encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if response.after is not None:
            response.after()

    return await asyncio.start_server(on_connection, host, 0, limit=MAX_HEAD)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The request on `reader`, or None when it is not HTTP/1.x this server understands."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *header_lines = head.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers = []
    for header in header_lines:
        if header:
            name, _, value = header.partition(":")
            headers.append((name.strip(), value.strip()))
    length = next((v for k, v in headers if k.lower() == "content-length"), "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return None
    body = await reader.readexactly(int(length)) if int(length) else b""
    return Request(parts[0], parts[1], headers, body)
