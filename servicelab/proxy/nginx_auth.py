"""The lab's decision endpoint for the nginx data plane (nginx asks by subrequest).

nginx asks with the original request's headers plus `X-Sl-Uri`, `X-Sl-Method`,
`X-Sl-Scheme`, `X-Sl-Upgrade` and the plane's key. The answer is `ProxyApp`'s own
admission, run on that request: the same token order, authorizer, resolver and
service-origin rules as the embedded plane. 200 means "admitted, forward it like this"
(headers below); 401 means "let the lab serve it": every reply the proxy makes itself
(login redirect, handshake, 401/403/404, 503 with Retry-After) and the sandboxed fallback,
whose responses get a CSP header that only the embedded plane adds.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from servicelab.credentials import TokenSource
from servicelab.proxy.admission import route_name
from servicelab.proxy.app import ProxyApp
from servicelab.proxy.asgi import ASGIApp, Receive, Scope, Send
from servicelab.proxy.nginx_conf import AUTH_PATH, upstream_name
from servicelab.proxy.replies import Reply
from servicelab.service_route import ROUTE, ROUTE_START

logger = logging.getLogger("servicelab.proxy")

_AUTH_PATH = AUTH_PATH.encode()
#: "Not for nginx: send the request to the lab."
_TO_LAB = Reply(401)


class NginxAuthApp:
    """Wrap the lab's `ProxyApp`: answer nginx's auth subrequests, pass the rest on."""

    def __init__(self, proxy: ProxyApp, key: str) -> None:
        self.proxy = proxy
        self._key = key.encode()

    @property
    def app(self) -> ASGIApp:
        return self.proxy.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path", b"").split(b"?")[0] == _AUTH_PATH:
            reply = await self.decide(scope)
            start = {"type": "http.response.start", "status": reply.status}
            start["headers"] = [*reply.headers, (b"content-length", b"0")]
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        await self.proxy(scope, receive, send)

    async def decide(self, scope: Scope) -> Reply:
        key = uri = None
        method, scheme, upgrade = b"GET", b"http", b""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            if not name.startswith(b"x-sl-"):
                headers.append((name, value))
            elif name == b"x-sl-key":
                key = value
            elif name == b"x-sl-uri":
                uri = value
            elif name == b"x-sl-method":
                method = value
            elif name == b"x-sl-scheme":
                scheme = value
            elif name == b"x-sl-upgrade":
                upgrade = value
        if key is None or uri is None or not hmac.compare_digest(key, self._key):
            return Reply(404)
        raw_path, _, query = uri.partition(b"?")
        ws = upgrade.lower() == b"websocket"
        inner: dict[str, Any] = {
            "type": "websocket" if ws else "http",
            "method": method.decode("latin-1"),
            "scheme": scheme.decode("latin-1"),
            "raw_path": raw_path,
            "path": raw_path.decode("latin-1"),
            "query_string": query,
            "headers": headers,
            "client": None,
        }
        try:
            return await self._admit(inner, raw_path, ws)
        except Exception:
            # The lab serves the request itself and answers with its envelope.
            logger.exception("nginx auth failed for %s", raw_path.decode("latin-1"))
            return _TO_LAB

    async def _admit(self, scope: dict[str, Any], raw_path: bytes, ws: bool) -> Reply:
        proxy = self.proxy
        match = ROUTE.fullmatch(raw_path) if raw_path.startswith(ROUTE_START) else None
        if match is None:
            return _TO_LAB
        site = proxy.hosts.site(scope)
        if site is not None and (
            not site.project
            or (route_name(match[1]).lower(), route_name(match[2]).lower())
            != (site.project, site.service)
        ):
            return _TO_LAB
        route = await proxy.admission.admit(scope, match, raw_path, ws=ws, site=site)
        if isinstance(route, Reply) or route.sandbox:
            return _TO_LAB
        req = route.req
        address = route.upstream.address
        host = f"[{address.host}]" if ":" in address.host else address.host
        authorization = b""
        if req.authorization is not None and route.source is not TokenSource.HEADER:
            authorization = req.authorization
        return Reply(
            200,
            b"",
            [
                (b"x-sl-upstream", upstream_name(address).encode()),
                (b"x-sl-address", f"{host}:{address.port}".encode()),
                (b"x-sl-strip", b"1" if route.upstream.strip_prefix else b"0"),
                (b"x-sl-query", b"?" + route.query if route.query else b""),
                (b"x-sl-cookie", b"; ".join(req.cookies)),
                (b"x-sl-authorization", authorization),
                (b"x-sl-user", (route.principal.user or "").encode()),
                (b"x-sl-project", route.principal.project.encode()),
            ],
        )
