"""Admission: who asks, whether they may, and where their request goes.

The same rules for HTTP and WebSocket, and for both planes: the embedded proxy asks it
for each request, the nginx plane through the lab's auth endpoint (`nginx_auth.py`). The
order of the token sources is servicelab.credentials'; the service-origin rules are
`origins.py`'s and `handshake.py`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from servicelab.credentials import COOKIE_NAME, QUERY_PARAM, TokenSource, find_token
from servicelab.proxy.asgi import Scope
from servicelab.proxy.contract import (
    AuthError,
    Authorizer,
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
    lab_cookie_reply,
    take_grant_cookie,
)
from servicelab.proxy.headers import IncomingRequest, is_browser, parse_request, strip_lab_query
from servicelab.proxy.hosts import HostMap
from servicelab.proxy.metrics import RouteStats, stats_for
from servicelab.proxy.replies import Reply, error
from servicelab.service_origins import OriginPolicy
from servicelab.spec import is_port

_PROTO = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def route_name(raw: bytes) -> str:
    """A project or service name as the route's path has it (percent-decoded)."""
    name = raw.decode("latin-1")
    return unquote(name) if "%" in name else name


def request_scheme(scope: Scope, req: IncomingRequest) -> str:
    """http or https: the trusted front proxy's word when there is one, else the server's."""
    if req.forwarded_proto:
        return req.forwarded_proto.split(b",")[0].strip().decode("latin-1").lower()
    scheme: str = scope.get("scheme", "http")
    return _PROTO.get(scheme, scheme)


@dataclass(slots=True)
class Route:
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
class Asking:
    """A request under admission, filled in step by step (see `Admission.admit`)."""

    scope: Scope
    raw_path: bytes
    ws: bool
    #: The service host it came to; None: the lab's own host.
    site: Site | None
    project: str
    service: str
    port: int
    #: The path after the route prefix, `/` at least.
    rest: bytes
    method: str
    req: IncomingRequest
    #: The lab's credential from the query, and the query without it.
    query_token: str | None
    query: bytes
    #: The URL without the lab's credential, where a redirect lands.
    clean: bytes
    #: The service origin's cookie (a grant), on a service host.
    grant: str | None = None
    principal: Principal | None = None
    source: TokenSource | None = None
    scheme: str = "http"
    sandbox: bool = False

    @property
    def who(self) -> Principal:
        """The principal, once the authentication step has passed the request on."""
        assert self.principal is not None, "authenticated first"
        return self.principal

    @property
    def page_load(self) -> bool:
        """A browser loading a page (not a WebSocket, not a write): redirects are fine."""
        return not self.ws and self.method in ("GET", "HEAD")


class Admission:
    """Authorise, resolve and strip requests for service routes."""

    def __init__(
        self,
        settings: ProxySettings,
        resolver: RouteResolver,
        authorizer: Authorizer,
        policy: OriginPolicy,
        hosts: HostMap,
        handshake: Handshake,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.authorizer = authorizer
        self.policy = policy
        self.hosts = hosts
        self.handshake = handshake
        self._allowed_origins = frozenset(
            o.rstrip("/").lower().encode() for o in settings.allowed_origins
        )
        self._allowed_origins_str = tuple(o.decode() for o in self._allowed_origins)

    async def admit(
        self,
        scope: Scope,
        match: re.Match[bytes],
        raw_path: bytes,
        ws: bool,
        site: Site | None = None,
    ) -> Route | Reply:
        """Authorise, resolve and strip one request; `site` is the service host it came to
        (None: the lab's own host, where only the path names the service).

        One step per concern, in order, as Starlette stacks one middleware per concern:
        each either answers (a `Reply`) or passes the request on."""
        asking = self._read(scope, match, raw_path, ws, site)
        if isinstance(asking, Reply):
            return asking
        for step in (self._authenticate_step, self._origin_step):
            reply = await step(asking)
            if reply is not None:
                return reply
        return await self._resolve_step(asking)

    def _read(
        self, scope: Scope, match: re.Match[bytes], raw_path: bytes, ws: bool, site: Site | None
    ) -> Asking | Reply:
        """The route's parts and the request's credentials; a port out of range is
        refused, a route without its slash redirected (relative links in the service's
        pages only work below a trailing slash)."""
        service = route_name(match[2])
        port = int(match[3])
        rest = match[4]
        if not is_port(port):
            return error(404, f"No port {port} on service {service!r}.")
        query_string: bytes = scope.get("query_string", b"")
        if rest is None:
            if not ws:
                location = raw_path + b"/" + (b"?" + query_string if query_string else b"")
                return Reply(307, b"", [(b"location", location)])
            rest = b"/"
        req = parse_request(scope["headers"], self.settings.trust_forwarded_headers)
        query_token, query = strip_lab_query(query_string)
        asking = Asking(
            scope=scope,
            raw_path=raw_path,
            ws=ws,
            site=site,
            project=route_name(match[1]),
            service=service,
            port=port,
            rest=rest,
            method=scope.get("method", "GET"),
            req=req,
            query_token=query_token,
            query=query,
            clean=raw_path + (b"?" + query if query else b""),
        )
        if site is not None:
            # On a service host the lab cookie means nothing (the lab never sets it
            # there); the service origin's own cookie does.
            asking.grant, req.cookies = take_grant_cookie(req.cookies)
            req.lab_cookie = None
        return asking

    async def _authenticate_step(self, a: Asking) -> Reply | None:
        """Who asks; a browser without credentials is sent to log in (on a service host:
        the handshake, the lab checks who this is and sends a code back)."""
        req = a.req
        try:
            a.principal, a.source = await self._authenticate(
                req, a.query_token, a.grant, a.project, a.service, a.site
            )
        except AuthError as exc:
            browser = not a.ws and a.method in ("GET", "HEAD") and is_browser(req.accept)
            if exc.status == 401 and browser:
                if a.site is not None:
                    scheme = request_scheme(a.scope, req)
                    return self.handshake.to_lab(scheme, req, a.raw_path, a.query)
                target = quote(a.clean.decode("latin-1"), safe="/")
                location = f"{self.settings.login_path}?next={target}".encode()
                return Reply(302, b"", [(b"location", location)])
            reply = error(exc.status, exc.message)
            if exc.status == 401:
                reply.headers.append((b"www-authenticate", b'Bearer realm="servicelab"'))
            return reply
        a.scheme = request_scheme(a.scope, req)
        return None

    async def _origin_step(self, a: Asking) -> Reply | None:
        """The service-origin rules for the credential used (origins.py, handshake.py)."""
        if a.site is not None:
            return self._service_host_rules(a, a.site)
        if a.source in (TokenSource.COOKIE, TokenSource.QUERY):
            return await self._lab_cookie_rules(a)
        if self.hosts.domain_for(a.req) is None:
            a.sandbox = True
        return None

    def _service_host_rules(self, a: Asking, site: Site) -> Reply | None:
        """On a service host: its cookie only from its own origin; a query token traded
        for that cookie."""
        if a.source is TokenSource.GRANT and not cookie_request_allowed(
            a.req.passed, a.method, a.ws, (site.origin, *self._allowed_origins_str)
        ):
            return error(403, "Cross-origin request with this service's cookie refused.")
        if a.source is TokenSource.QUERY and a.page_load:
            return self.handshake.grant_reply(a.who, a.project, a.service, a.scheme, a.clean)
        return None

    async def _lab_cookie_rules(self, a: Asking) -> Reply | None:
        """A lab cookie or query token on the lab's host: browsers go to the service's own
        origin, or are served sandboxed when none can be formed."""
        req = a.req
        origin = None
        if self.hosts.domain_for(req) is not None:
            lab_host = (req.forwarded_host or req.host or b"").decode("latin-1")
            origin = self.policy.service_origin(a.scheme, lab_host, a.project, a.service)
        if origin is not None:
            # A browser on the lab's origin: the service's pages run on their own.
            if a.page_load:
                return await self.handshake.code_reply(a.who, a.project, a.service, origin, a.clean)
            # Browsers send Origin with every WebSocket and every other method: a
            # request without it is a script's, served as before.
            if req.origin is not None:
                return error(
                    403,
                    "Browsers reach this service on its own origin: "
                    f"{origin}{a.raw_path.decode('latin-1')}",
                )
        # No origin can be formed: the page is served in a sandbox (an opaque origin).
        a.sandbox = origin is None
        if a.ws and a.source is TokenSource.COOKIE and not self.origin_allowed(a.scope, req):
            return error(403, "WebSocket from a foreign origin refused (cross-site request).")
        if a.source is TokenSource.QUERY and a.page_load:
            return lab_cookie_reply(a.scheme, a.clean, a.query_token or "")
        return None

    async def _resolve_step(self, a: Asking) -> Route | Reply:
        """Where the service's port is; the admitted route."""
        try:
            upstream = await self.resolver.resolve(a.project, a.service, a.port)
        except RouteError as exc:
            return error(exc.status, exc.message, exc.retry_after)
        return Route(
            project=a.project,
            service=a.service,
            port=a.port,
            prefix=a.raw_path[: len(a.raw_path) - len(a.rest)],
            path=a.rest if upstream.strip_prefix else a.raw_path,
            query=a.query,
            req=a.req,
            principal=a.who,
            source=a.source,
            upstream=upstream,
            stats=stats_for(a.project, a.service, a.port),
            sandbox=a.sandbox,
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

    def origin_allowed(self, scope: Scope, req: IncomingRequest) -> bool:
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
        own = f"{request_scheme(scope, req)}://".encode() + host.split(b",")[0].strip().lower()
        return origin == own
