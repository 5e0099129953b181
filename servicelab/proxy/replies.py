"""Responses the proxy makes itself (errors in ML Lab's envelope, redirects)."""

from __future__ import annotations

from dataclasses import dataclass, field

from servicelab.envelope import error_bytes
from servicelab.proxy.asgi import Send
from servicelab.proxy.dates import http_date

_JSON = (b"content-type", b"application/json")


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def error(status: int, message: str, retry_after: int | None = None) -> Reply:
    headers = [_JSON]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return Reply(status, error_bytes(status, message), headers)


def redirect(location: bytes, *headers: tuple[bytes, bytes]) -> Reply:
    return Reply(302, b"", [(b"location", location), *headers])


async def send_reply(send: Send, reply: Reply) -> None:
    headers = reply.headers
    headers.append((b"content-length", str(len(reply.body)).encode()))
    headers.append((b"date", http_date()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})
