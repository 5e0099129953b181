"""`ProxyApp`: the ASGI front door for `/api/projects/{p}/services/{s}/{port}/...`.

A raw ASGI application wrapping the lab's own app: requests under a service route are
authorised and resolved (`admission.py`) and forwarded (`forward.py`, WebSockets
`websocket.py`), everything else (and lifespan) goes to the wrapped app untouched. No
framework routing sits in the hot path: one `startswith`, one
precompiled regular expression, one pass over the headers.

HTTP goes to services through `servicelab.proxy.client` (a lean keep-alive HTTP/1.1
client on httptools, half the CPU per request of aiohttp's); WebSockets through one
`aiohttp.ClientSession` (no cookie jar, no decompression).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import aiohttp
from yarl import URL

from servicelab.proxy import websocket
from servicelab.proxy.admission import Admission, request_scheme, route_name
from servicelab.proxy.asgi import ASGIApp, Message, Receive, Scope, Send
from servicelab.proxy.client import UpstreamPool
from servicelab.proxy.contract import (
    Authorizer,
    CodeStore,
    MemoryCodes,
    ProxySettings,
    RouteResolver,
)
from servicelab.proxy.forward import Exchange, client_ip, forward_http, upstream_headers
from servicelab.proxy.handshake import (
    Handshake,
    Site,
)
from servicelab.proxy.headers import (
    parse_request,
)
from servicelab.proxy.hosts import HostMap
from servicelab.proxy.metrics import UNROUTED, record, stats_for
from servicelab.proxy.replies import Reply, error, send_reply
from servicelab.service_origins import (
    CALLBACK_PATH,
    OriginPolicy,
)
from servicelab.service_route import ROUTE, ROUTE_START

logger = logging.getLogger("servicelab.proxy")


class ProxyApp:
    """Wrap `app`, proxying service routes with `resolver` and `authorizer`.

    Call `startup()`/`shutdown()` (or let the ASGI lifespan do it) to open and close the
    pooled upstream client; it is also opened on first use.
    """

    def __init__(
        self,
        app: ASGIApp,
        resolver: RouteResolver,
        authorizer: Authorizer,
        settings: ProxySettings | None = None,
        codes: CodeStore | None = None,
    ) -> None:
        self.app = app
        self.resolver = resolver
        self.authorizer = authorizer
        self.settings = settings or ProxySettings()
        #: One-time codes of the handshake: the database for a lab, memory for tests.
        self.codes: CodeStore = codes or MemoryCodes()
        self.policy = OriginPolicy(self.settings.service_domain)
        self.hosts = HostMap(self.policy, resolver, self.settings.trust_forwarded_headers)
        self.handshake = Handshake(self.settings, self.codes, authorizer)
        self._session: aiohttp.ClientSession | None = None
        self._pool = UpstreamPool(self.settings.connect_timeout, self.settings.read_timeout)
        self.admission = Admission(
            self.settings, resolver, authorizer, self.policy, self.hosts, self.handshake
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        self._open_session()

    async def shutdown(self) -> None:
        self._pool.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        """The WebSocket client (opened on first use if lifespan did not run)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.settings.connect_timeout,
                    sock_read=self.settings.read_timeout,
                ),
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
                max_line_size=65536,
                max_field_size=65536,
            )
        return self._session

    # -- ASGI entry --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            site = self.hosts.site(scope)
            if site is not None:
                await self._service_host(scope, receive, send, raw_path, site)
                return
            if raw_path.startswith(ROUTE_START):
                match = ROUTE.fullmatch(raw_path)
                if match is not None:
                    if kind == "http":
                        await self._http(scope, receive, send, match, raw_path)
                    else:
                        await self._websocket(scope, receive, send, match, raw_path)
                    return
        elif kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        await self.app(scope, receive, send)

    async def _service_host(
        self, scope: Scope, receive: Receive, send: Send, raw_path: bytes, site: Site
    ) -> None:
        """A service host answers its service's routes and the handshake's callback only:
        nothing of the lab (API, UI, other services) is reachable on it."""
        kind = scope["type"]
        match = ROUTE.fullmatch(raw_path) if raw_path.startswith(ROUTE_START) else None
        if (
            match is not None
            and site.project
            and (route_name(match[1]).lower(), route_name(match[2]).lower())
            == (site.project, site.service)
        ):
            if kind == "http":
                await self._http(scope, receive, send, match, raw_path, site)
            else:
                await self._websocket(scope, receive, send, match, raw_path, site)
            return
        started = time.perf_counter()
        if kind == "websocket":
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            reply = error(404, "Not found on this service's host.")
            await websocket.reject(scope, send, reply.status, reply.body, reply.headers)
        else:
            if raw_path == CALLBACK_PATH and site.project and scope["method"] in ("GET", "HEAD"):
                try:
                    req = parse_request(scope["headers"], self.settings.trust_forwarded_headers)
                    reply = await self.handshake.callback(
                        scope.get("query_string", b""), request_scheme(scope, req), site
                    )
                except Exception:
                    logger.exception("service-origin handshake failed for %s", site.origin)
                    reply = error(500, "The lab could not check this request; try again later.")
            else:
                reply = error(
                    404, "Not found: this host serves one service's routes, nothing else."
                )
            await send_reply(send, reply)
        path = raw_path.decode("latin-1")
        record(
            stats_for(*UNROUTED),
            scope.get("method", "WS"),
            path,
            client_ip(scope),
            reply.status,
            0,
            0,
            started,
        )

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
            return message

        return wrapped

    # -- HTTP --------------------------------------------------------------------------

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        match: re.Match[bytes],
        raw_path: bytes,
        site: Site | None = None,
    ) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        log_path = raw_path.decode("latin-1")
        try:
            admitted = await self.admission.admit(scope, match, raw_path, ws=False, site=site)
        except Exception:
            # A resolver or authorizer bug or outage: the client gets the envelope.
            logger.exception("proxy admission failed for %s", log_path)
            admitted = error(500, "The lab could not check this request; try again later.")
        if isinstance(admitted, Reply):
            await send_reply(send, admitted)
            stats = stats_for(*UNROUTED)
            record(stats, method, log_path, client_ip(scope), admitted.status, 0, 0, started)
            return
        route = admitted
        exchange = Exchange()
        try:
            exchange.status = await forward_http(self._pool, scope, receive, send, route, exchange)
        except asyncio.CancelledError:
            if not exchange.client_gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            record(
                route.stats,
                method,
                log_path,
                client_ip(scope),
                499 if exchange.client_gone else exchange.status,
                exchange.bytes_in,
                exchange.bytes_out,
                started,
            )

    # -- WebSocket ---------------------------------------------------------------------

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        match: re.Match[bytes],
        raw_path: bytes,
        site: Site | None = None,
    ) -> None:
        started = time.perf_counter()
        log_path = raw_path.decode("latin-1")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            admitted = await self.admission.admit(scope, match, raw_path, ws=True, site=site)
        except Exception:
            logger.exception("proxy admission failed for %s", log_path)
            admitted = error(500, "The lab could not check this request; try again later.")
        if isinstance(admitted, Reply):
            await websocket.reject(scope, send, admitted.status, admitted.body, admitted.headers)
            stats = stats_for(*UNROUTED)
            record(stats, "WS", log_path, client_ip(scope), admitted.status, 0, 0, started)
            return
        route = admitted
        session = self._session or self._open_session()
        target = "ws" + route.upstream.address.url[4:] + route.path.decode("latin-1")
        if route.query:
            target += "?" + route.query.decode("latin-1")
        headers = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in upstream_headers(scope, route)
            if n not in websocket.HANDSHAKE
        ]
        counts = websocket.Counts()
        status = await websocket.proxy(
            scope,
            receive,
            send,
            session,
            URL(target, encoded=True),
            headers,
            route.stats,
            counts,
        )
        record(
            route.stats,
            "WS",
            log_path,
            client_ip(scope),
            status,
            counts.bytes_in,
            counts.bytes_out,
            started,
        )
