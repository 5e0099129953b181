"""The `Date` header: a response has exactly one.

uvicorn's own `Date` would be a second one on every proxied response, beside the
service's, so the lab turns it off and dates what it answers itself: a service's response
keeps the service's `Date` and gets the lab's only when it has none (as nginx does with
`proxy_pass_header Date`), and the lab's own pages, API and error replies get the lab's.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from servicelab.proxy.asgi import ASGIApp, Message, Receive, Scope, Send

_second = -1
_value = b""


def http_date() -> bytes:
    """Now, as an HTTP date (formatted once a second)."""
    global _second, _value
    now = time.time()
    if int(now) != _second:
        _value = formatdate(now, usegmt=True).encode()
        _second = int(now)
    return _value


class DateHeader:
    """ASGI middleware: the lab's `Date` on each HTTP response of `app` that has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"date" for name, _ in headers):
                    headers.append((b"date", http_date()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_dated)
