"""WebSocket pass-through: ASGI WebSocket downstream, aiohttp `ws_connect` upstream.

The upstream handshake happens first, so the client is accepted with the subprotocol the
service chose (or refused with the service's own status). Then two pumps copy text and
binary messages each way; whichever side closes first, its close code is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp
from yarl import URL

from servicelab.envelope import error_bytes
from servicelab.proxy.asgi import Message, Receive, Scope, Send
from servicelab.proxy.headers import WS_HANDSHAKE
from servicelab.proxy.metrics import RouteStats

HANDSHAKE = WS_HANDSHAKE

#: Codes that may not be sent in a close frame (RFC 6455 §7.4.1): they only say what
#: happened locally. Passed on as "normal" or "internal error".
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}


@dataclass(slots=True)
class Counts:
    bytes_in: int = 0
    bytes_out: int = 0


def _code(code: int | None) -> int:
    if code is None:
        return 1000
    return _UNSENDABLE.get(code, code)


async def reject(
    scope: Scope, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Refuse a handshake, with an HTTP response where the server supports it (so clients
    see 401/403/404 and the envelope), else with close code 1008 (policy violation)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = list(headers)
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011})


async def proxy(
    scope: Scope,
    receive: Receive,
    send: Send,
    session: aiohttp.ClientSession,
    url: URL,
    headers: list[tuple[str, str]],
    stats: RouteStats,
    counts: Counts,
) -> int:
    """Run one WebSocket through; returns the status for the access log (101 or an error)."""
    subprotocols: list[str] = list(scope.get("subprotocols") or [])
    try:
        upstream = await session.ws_connect(
            url,
            headers=headers,
            protocols=subprotocols,
            autoclose=True,
            autoping=True,
            max_msg_size=0,
            compress=0,
            # The handshake has the session's connect and read timeouts; an open socket
            # may then be silent as long as it likes.
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if exc.status >= 400 else 502
        message = f"The service refused the WebSocket (status {exc.status})."
        await reject(scope, send, status, error_bytes(status, message), _json())
        return status
    except (TimeoutError, aiohttp.ServerTimeoutError):
        await reject(scope, send, 504, error_bytes(504, "The service did not answer."), _json())
        return 504
    except aiohttp.ClientError:
        message = "The service refused the connection; it may be starting or stopped."
        await reject(scope, send, 502, error_bytes(502, message), _json())
        return 502

    await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
    stats.websockets.inc()
    try:
        await _pump(receive, send, upstream, counts)
    finally:
        stats.websockets.dec()
        if not upstream.closed:
            await upstream.close()
    return 101


def _json() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json")]


async def _pump(
    receive: Receive, send: Send, upstream: aiohttp.ClientWebSocketResponse, counts: Counts
) -> None:
    async def client_to_service() -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    counts.bytes_in += len(text)
                    await upstream.send_str(text)
                else:
                    data = message.get("bytes") or b""
                    counts.bytes_in += len(data)
                    await upstream.send_bytes(data)
            elif kind == "websocket.disconnect":
                await upstream.close(code=_code(message.get("code")), message=_reason(message))
                return

    async def service_to_client() -> None:
        while True:
            msg = await upstream.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                counts.bytes_out += len(msg.data)
                await send({"type": "websocket.send", "text": msg.data})
            elif msg.type is aiohttp.WSMsgType.BINARY:
                counts.bytes_out += len(msg.data)
                await send({"type": "websocket.send", "bytes": msg.data})
            else:
                # CLOSE carries the service's code and reason; CLOSED/ERROR mean the
                # connection dropped without one.
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    code, reason = _code(msg.data), msg.extra or ""
                else:
                    code, reason = _code(upstream.close_code or 1006), ""
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return

    tasks = [
        asyncio.create_task(client_to_service()),
        asyncio.create_task(service_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            # A pump that failed because the other side vanished has nothing to report.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _reason(message: Message) -> bytes:
    reason = message.get("reason") or ""
    return reason.encode() if isinstance(reason, str) else bytes(reason)
