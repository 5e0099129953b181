"""Forwarding an admitted HTTP request: the headers the service gets, the request body
streamed on as it arrives, the answer streamed back (`servicelab.proxy.client`), a
client that leaves mid-way noticed and counted as 499.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from servicelab.credentials import TokenSource
from servicelab.proxy.admission import Route, request_scheme
from servicelab.proxy.asgi import Receive, Scope, Send
from servicelab.proxy.client import (
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from servicelab.proxy.handshake import drop_lab_set_cookies
from servicelab.proxy.headers import response_headers
from servicelab.proxy.replies import error, send_reply
from servicelab.service_origins import SANDBOX_CSP

logger = logging.getLogger("servicelab.proxy")

_HTTP11 = b" HTTP/1.1\r\n"


@dataclass(slots=True)
class Exchange:
    """Mutable per-request state shared by the body generator and the response loop."""

    #: What the client was told (for the log and metrics), 502 until a response starts.
    status: int = 502
    bytes_in: int = 0
    bytes_out: int = 0
    body_done: bool = True
    finished: bool = False
    client_gone: bool = False


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


def upstream_headers(scope: Scope, route: Route) -> list[tuple[bytes, bytes]]:
    """The request headers the service gets: the client's end-to-end ones, minus the
    lab credential, plus the proxy's own."""
    req = route.req
    headers = list(req.passed)
    if req.cookies:
        headers.append((b"cookie", b"; ".join(req.cookies)))
    if req.authorization is not None and route.source is not TokenSource.HEADER:
        headers.append((b"authorization", req.authorization))
    client = client_ip(scope).encode()
    if req.forwarded_for:
        client = req.forwarded_for + b", " + client
    headers.append((b"x-forwarded-for", client))
    headers.append((b"x-forwarded-proto", request_scheme(scope, req).encode()))
    host = req.forwarded_host or req.host
    if host is not None:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"x-forwarded-prefix", route.prefix))
    if route.principal.user:
        headers.append((b"x-lab-user", route.principal.user.encode()))
    headers.append((b"x-lab-project", route.principal.project.encode()))
    return headers


async def forward_http(
    pool: UpstreamPool,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    exchange: Exchange,
) -> int:
    """Send the admitted request on to its service and its answer back; the status the
    client was told."""
    response = await _send_request(pool, scope, receive, send, route, exchange)
    if isinstance(response, int):
        return response
    try:
        return await _relay(response, receive, send, route, exchange)
    except BaseException:
        response.close()
        raise
    finally:
        response.release()


def _request_head(
    scope: Scope, route: Route, receive: Receive, exchange: Exchange
) -> tuple[bytes, AsyncIterator[bytes] | None, bool]:
    """The request line and headers for the service, the body to stream after them
    (None: none), and whether it goes chunked (the client sent no length)."""
    address = route.upstream.address
    headers = upstream_headers(scope, route)
    req = route.req
    body = None
    chunked = False
    if req.has_body:
        exchange.body_done = False
        body = _request_body(receive, exchange)
        if not req.has_length:
            chunked = True
            headers.append((b"transfer-encoding", b"chunked"))
    if req.host is None:
        headers.append((b"host", f"{address.host}:{address.port}".encode()))
    head = [scope["method"].encode(), b" ", route.path]
    if route.query:
        head += (b"?", route.query)
    head.append(_HTTP11)
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    head.append(b"\r\n")
    return b"".join(head), body, chunked


async def _send_request(
    pool: UpstreamPool,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    exchange: Exchange,
) -> UpstreamResponse | int:
    """The service's response, or the status the client was told when there is none
    (the proxy's own 502/504, or 499 for a client that left)."""
    address = route.upstream.address
    head, body, chunked = _request_head(scope, route, receive, exchange)
    try:
        return await pool.request(
            address.host,
            address.port,
            head,
            body,
            chunked=chunked,
            head_only=scope["method"] == "HEAD",
        )
    except _ClientGone:
        exchange.client_gone = True
        return 499
    except UpstreamTimeout:
        reply = error(504, f"Service {route.service!r} did not answer in time.")
        await send_reply(send, reply)
        return 504
    except (UpstreamError, OSError) as exc:
        if exchange.client_gone:
            return 499
        logger.info("upstream %s of %s/%s: %s", address.url, route.project, route.service, exc)
        reply = error(
            502,
            f"Service {route.service!r} refused the connection on port {route.port}; "
            "it may still be starting or have stopped.",
        )
        await send_reply(send, reply)
        return 502


def _client_headers(response: UpstreamResponse, route: Route) -> list[tuple[bytes, bytes]]:
    """The response headers the client gets: redirects back under the route prefix, no
    lab cookie set by the service, the sandbox where the route has no origin."""
    host = (route.req.forwarded_host or route.req.host or b"").lower()
    origin = route.upstream.address.url.lower().encode()
    headers = response_headers(
        response.headers,
        (origin, b"http://" + host, b"https://" + host),
        route.prefix,
        route.upstream.strip_prefix,
    )
    headers = drop_lab_set_cookies(headers)
    if route.sandbox:
        headers.append((b"content-security-policy", SANDBOX_CSP))
    return headers


async def _relay(
    response: UpstreamResponse, receive: Receive, send: Send, route: Route, exchange: Exchange
) -> int:
    """The service's answer to the client, streamed; its status."""
    headers = _client_headers(response, route)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    exchange.status = response.status
    chunk = await response.read()
    if response.at_eof():
        # The whole body is here (the usual small response): no watcher needed.
        exchange.bytes_out += len(chunk)
        exchange.finished = True
        await send({"type": "http.response.body", "body": chunk, "more_body": False})
        return response.status
    exchange.bytes_out += len(chunk)
    await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await _stream_rest(response, receive, send, exchange)
    return response.status


async def _stream_rest(
    response: UpstreamResponse, receive: Receive, send: Send, exchange: Exchange
) -> None:
    """A long response (a download, SSE): stop reading the service once the client is
    gone, since the ASGI server drops our sends silently after that."""
    watcher = None
    task = asyncio.current_task()
    if exchange.body_done and task is not None:
        watcher = asyncio.create_task(_watch_disconnect(receive, task, exchange))
    try:
        while True:
            chunk = await response.read()
            if not chunk:
                break
            exchange.bytes_out += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        exchange.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if watcher is not None:
            watcher.cancel()


async def _request_body(receive: Receive, exchange: Exchange) -> AsyncIterator[bytes]:
    """The client's body as it arrives: never more than one chunk held."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            exchange.client_gone = True
            raise _ClientGone()
        body = message.get("body", b"")
        if body:
            exchange.bytes_in += len(body)
            yield body
        if not message.get("more_body", False):
            exchange.body_done = True
            return


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], exchange: Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
    if not exchange.finished:
        exchange.client_gone = True
        task.cancel()
