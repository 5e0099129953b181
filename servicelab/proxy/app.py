"""`ProxyApp`: the ASGI front door for `/api/projects/{p}/services/{s}/{port}/...`.

A raw ASGI application wrapping the lab's own app: requests under a service route are
authorised, resolved and forwarded here, everything else (and lifespan) goes to the
wrapped app untouched. No framework routing sits in the hot path: one `startswith`, one
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
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from yarl import URL

from servicelab.credentials import COOKIE_NAME, QUERY_PARAM, TokenSource, find_token
from servicelab.proxy import websocket
from servicelab.proxy.client import UpstreamError, UpstreamPool, UpstreamTimeout
from servicelab.proxy.contract import (
    AuthError,
    Authorizer,
    CodeStore,
    MemoryCodes,
    Principal,
    ProxySettings,
    RouteError,
    RouteResolver,
    Upstream,
)
from servicelab.proxy.grants import verify
from servicelab.proxy.handshake import (
    Handshake,
    Site,
    cookie_request_allowed,
    drop_lab_set_cookies,
    lab_cookie_reply,
    take_grant_cookie,
)
from servicelab.proxy.headers import (
    IncomingRequest,
    is_browser,
    parse_request,
    response_headers,
    strip_lab_query,
)
from servicelab.proxy.hosts import HostMap
from servicelab.proxy.metrics import UNROUTED, RouteStats, record, stats_for
from servicelab.proxy.origins import (
    CALLBACK_PATH,
    SANDBOX_CSP,
    OriginPolicy,
)
from servicelab.proxy.replies import Reply, error, send_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("servicelab.proxy")

_ROUTE_START = b"/api/projects/"
_ROUTE = re.compile(rb"/api/projects/([^/]+)/services/([^/]+)/([0-9]{1,5})(/.*)?", re.DOTALL)
_HTTP11 = b" HTTP/1.1\r\n"


@dataclass(slots=True)
class _Route:
    """An admitted request: authorised, resolved, its credentials taken out."""

    project: str
    service: str
    port: int
    prefix: bytes
    path: bytes
    query: bytes
    req: IncomingRequest
    principal: Principal
    source: TokenSource | None
    upstream: Upstream
    stats: RouteStats
    #: Served without an origin of its own: the response gets `Content-Security-Policy:
    #: sandbox`, so its pages run as an opaque origin.
    sandbox: bool = False


@dataclass(slots=True)
class _Exchange:
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


def _name(raw: bytes) -> str:
    name = raw.decode("latin-1")
    return unquote(name) if "%" in name else name


_PROTO = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


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
        self._allowed_origins = frozenset(
            o.rstrip("/").lower().encode() for o in self.settings.allowed_origins
        )
        self._allowed_origins_str = tuple(o.decode() for o in self._allowed_origins)

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
            if raw_path.startswith(_ROUTE_START):
                match = _ROUTE.fullmatch(raw_path)
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
        match = _ROUTE.fullmatch(raw_path) if raw_path.startswith(_ROUTE_START) else None
        if (
            match is not None
            and site.project
            and (_name(match[1]).lower(), _name(match[2]).lower()) == (site.project, site.service)
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
                        scope.get("query_string", b""), self._scheme(scope, req), site
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
            _client_ip(scope),
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

    # -- admission: the same for HTTP and WebSocket ------------------------------------

    async def _admit(
        self,
        scope: Scope,
        match: re.Match[bytes],
        raw_path: bytes,
        ws: bool,
        site: Site | None = None,
    ) -> _Route | Reply:
        """Authorise, resolve and strip one request; `site` is the service host it came to
        (None: the lab's own host, where only the path names the service)."""
        project = _name(match[1])
        service = _name(match[2])
        port = int(match[3])
        rest = match[4]
        if not 0 < port < 65536:
            return error(404, f"No port {port} on service {service!r}.")
        query_string: bytes = scope.get("query_string", b"")
        if rest is None:
            if not ws:
                # Relative links in the service's pages only work below a trailing slash.
                location = raw_path + b"/" + (b"?" + query_string if query_string else b"")
                return Reply(307, b"", [(b"location", location)])
            rest = b"/"
        settings = self.settings
        method: str = scope.get("method", "GET")
        req = parse_request(scope["headers"], settings.trust_forwarded_headers)
        query_token, query = strip_lab_query(query_string)
        #: The URL without the lab's credential, where a redirect lands.
        clean = raw_path + (b"?" + query if query else b"")
        grant = None
        if site is not None:
            # On a service host the lab cookie means nothing (the lab never sets it
            # there); the service origin's own cookie does.
            grant, req.cookies = take_grant_cookie(req.cookies)
            req.lab_cookie = None

        try:
            principal, source = await self._authenticate(
                req, query_token, grant, project, service, site
            )
        except AuthError as exc:
            browser = not ws and method in ("GET", "HEAD") and is_browser(req.accept)
            if exc.status == 401 and browser:
                if site is not None:
                    # The handshake: the lab checks who this is and sends a code back.
                    return self.handshake.to_lab(self._scheme(scope, req), req, raw_path, query)
                target = quote(clean.decode("latin-1"), safe="/")
                location = f"{settings.login_path}?next={target}".encode()
                return Reply(302, b"", [(b"location", location)])
            reply = error(exc.status, exc.message)
            if exc.status == 401:
                reply.headers.append((b"www-authenticate", b'Bearer realm="servicelab"'))
            return reply

        scheme = self._scheme(scope, req)
        sandbox = False
        if site is not None:
            if source is TokenSource.GRANT and not cookie_request_allowed(
                req.passed, method, ws, (site.origin, *self._allowed_origins_str)
            ):
                return error(403, "Cross-origin request with this service's cookie refused.")
            if source is TokenSource.QUERY and not ws and method in ("GET", "HEAD"):
                return self.handshake.grant_reply(principal, project, service, scheme, clean)
        elif source in (TokenSource.COOKIE, TokenSource.QUERY):
            origin = None
            if self.hosts.domain_for(req) is not None:
                lab_host = (req.forwarded_host or req.host or b"").decode("latin-1")
                origin = self.policy.service_origin(scheme, lab_host, project, service)
            if origin is not None:
                # A browser on the lab's origin: the service's pages run on their own.
                if not ws and method in ("GET", "HEAD"):
                    return await self.handshake.code_reply(
                        principal, project, service, origin, clean
                    )
                # Browsers send Origin with every WebSocket and every other method: a
                # request without it is a script's, served as before.
                if req.origin is not None:
                    return error(
                        403,
                        "Browsers reach this service on its own origin: "
                        f"{origin}{raw_path.decode('latin-1')}",
                    )
            # No origin can be formed: the page is served in a sandbox (an opaque origin).
            sandbox = origin is None
            if ws and source is TokenSource.COOKIE and not self._origin_allowed(scope, req):
                return error(403, "WebSocket from a foreign origin refused (cross-site request).")
            if source is TokenSource.QUERY and not ws and method in ("GET", "HEAD"):
                return lab_cookie_reply(scheme, clean, query_token or "")
        elif self.hosts.domain_for(req) is None:
            sandbox = True

        try:
            upstream = await self.resolver.resolve(project, service, port)
        except RouteError as exc:
            return error(exc.status, exc.message, exc.retry_after)

        prefix = raw_path[: len(raw_path) - len(rest)]
        return _Route(
            project=project,
            service=service,
            port=port,
            prefix=prefix,
            path=rest if upstream.strip_prefix else raw_path,
            query=query,
            req=req,
            principal=principal,
            source=source,
            upstream=upstream,
            stats=stats_for(project, service, port),
            sandbox=sandbox,
        )

    async def _authenticate(
        self,
        req: IncomingRequest,
        query_token: str | None,
        grant: str | None,
        project: str,
        service: str,
        site: Site | None,
    ) -> tuple[Principal, TokenSource]:
        """Who is asking, from the first credential present (see servicelab.credentials;
        on a service host its cookie stands where the lab cookie would)."""
        authorization = req.authorization.decode("latin-1") if req.authorization else None
        cookies = {COOKIE_NAME: req.lab_cookie} if req.lab_cookie else {}
        params = {QUERY_PARAM: query_token} if query_token else {}
        header_token = find_token(authorization, {}, {})
        if header_token is not None:
            try:
                principal = await self.authorizer.authorize(header_token.token, project)
                return principal, TokenSource.HEADER
            except AuthError as exc:
                # An Authorization header that is no lab token may be the service's own
                # (its Basic auth, its API keys) when another lab credential is there.
                if exc.status != 401 or not (cookies or params or grant):
                    raise
        if grant is not None:
            granted = verify(self.settings.secret_key, grant, "grant")
            if (
                granted is None
                or site is None
                or (granted.project, granted.service)
                != (
                    site.project,
                    site.service,
                )
            ):
                if not params:
                    raise AuthError(401, "This service's session has ended: open it again.")
            else:
                principal = await self.authorizer.authorize_parent(granted.parent, project)
                return principal, TokenSource.GRANT
        found = find_token(None, cookies, params)
        principal = await self.authorizer.authorize(found.token if found else None, project)
        assert found is not None  # authorize refuses a missing token
        return principal, found.source

    def _scheme(self, scope: Scope, req: IncomingRequest) -> str:
        if req.forwarded_proto:
            return req.forwarded_proto.split(b",")[0].strip().decode("latin-1").lower()
        scheme: str = scope.get("scheme", "http")
        return _PROTO.get(scheme, scheme)

    def _origin_allowed(self, scope: Scope, req: IncomingRequest) -> bool:
        origin = req.origin
        if origin is None:
            # Browsers always send Origin with a WebSocket; its absence means no browser,
            # so no cross-site forgery with someone else's cookie.
            return True
        origin = origin.rstrip(b"/").lower()
        if origin in self._allowed_origins:
            return True
        host = req.forwarded_host or req.host
        if host is None:
            return False
        own = f"{self._scheme(scope, req)}://".encode() + host.split(b",")[0].strip().lower()
        return origin == own

    def _upstream_headers(self, scope: Scope, route: _Route) -> list[tuple[bytes, bytes]]:
        """The request headers the service gets: the client's end-to-end ones, minus the
        lab credential, plus the proxy's own."""
        req = route.req
        headers = list(req.passed)
        if req.cookies:
            headers.append((b"cookie", b"; ".join(req.cookies)))
        if req.authorization is not None and route.source is not TokenSource.HEADER:
            headers.append((b"authorization", req.authorization))
        client = _client_ip(scope).encode()
        if req.forwarded_for:
            client = req.forwarded_for + b", " + client
        headers.append((b"x-forwarded-for", client))
        headers.append((b"x-forwarded-proto", self._scheme(scope, req).encode()))
        host = req.forwarded_host or req.host
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        headers.append((b"x-forwarded-prefix", route.prefix))
        if route.principal.user:
            headers.append((b"x-lab-user", route.principal.user.encode()))
        headers.append((b"x-lab-project", route.principal.project.encode()))
        return headers

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
            admitted = await self._admit(scope, match, raw_path, ws=False, site=site)
        except Exception:
            # A resolver or authorizer bug or outage: the client gets the envelope.
            logger.exception("proxy admission failed for %s", log_path)
            admitted = error(500, "The lab could not check this request; try again later.")
        if isinstance(admitted, Reply):
            await send_reply(send, admitted)
            stats = stats_for(*UNROUTED)
            record(stats, method, log_path, _client_ip(scope), admitted.status, 0, 0, started)
            return
        route = admitted
        exchange = _Exchange()
        try:
            exchange.status = await self._forward(scope, receive, send, route, exchange)
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
                _client_ip(scope),
                499 if exchange.client_gone else exchange.status,
                exchange.bytes_in,
                exchange.bytes_out,
                started,
            )

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, route: _Route, exchange: _Exchange
    ) -> int:
        address = route.upstream.address
        method: str = scope["method"]
        headers = self._upstream_headers(scope, route)
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
        head = [method.encode(), b" ", route.path]
        if route.query:
            head += (b"?", route.query)
        head.append(_HTTP11)
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        try:
            response = await self._pool.request(
                address.host,
                address.port,
                b"".join(head),
                body,
                chunked=chunked,
                head_only=method == "HEAD",
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
        try:
            host = (route.req.forwarded_host or route.req.host or b"").lower()
            origin = address.url.lower().encode()
            out_headers = response_headers(
                response.headers,
                (origin, b"http://" + host, b"https://" + host),
                route.prefix,
                route.upstream.strip_prefix,
            )
            out_headers = drop_lab_set_cookies(out_headers)
            if route.sandbox:
                out_headers.append((b"content-security-policy", SANDBOX_CSP))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": out_headers}
            )
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
            # A long response (a download, SSE): stop reading the service once the client
            # is gone, since the ASGI server drops our sends silently after that.
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
            return response.status
        except BaseException:
            response.close()
            raise
        finally:
            response.release()

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
            admitted = await self._admit(scope, match, raw_path, ws=True, site=site)
        except Exception:
            logger.exception("proxy admission failed for %s", log_path)
            admitted = error(500, "The lab could not check this request; try again later.")
        if isinstance(admitted, Reply):
            await websocket.reject(scope, send, admitted.status, admitted.body, admitted.headers)
            stats = stats_for(*UNROUTED)
            record(stats, "WS", log_path, _client_ip(scope), admitted.status, 0, 0, started)
            return
        route = admitted
        session = self._session or self._open_session()
        target = "ws" + route.upstream.address.url[4:] + route.path.decode("latin-1")
        if route.query:
            target += "?" + route.query.decode("latin-1")
        headers = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in self._upstream_headers(scope, route)
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
            _client_ip(scope),
            status,
            counts.bytes_in,
            counts.bytes_out,
            started,
        )


async def _request_body(receive: Receive, exchange: _Exchange) -> AsyncIterator[bytes]:
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


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], exchange: _Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
    if not exchange.finished:
        exchange.client_gone = True
        task.cancel()
