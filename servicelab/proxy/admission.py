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
from servicelab.proxy.origins import OriginPolicy
from servicelab.proxy.replies import Reply, error

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
        (None: the lab's own host, where only the path names the service)."""
        project = route_name(match[1])
        service = route_name(match[2])
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
                    return self.handshake.to_lab(request_scheme(scope, req), req, raw_path, query)
                target = quote(clean.decode("latin-1"), safe="/")
                location = f"{settings.login_path}?next={target}".encode()
                return Reply(302, b"", [(b"location", location)])
            reply = error(exc.status, exc.message)
            if exc.status == 401:
                reply.headers.append((b"www-authenticate", b'Bearer realm="servicelab"'))
            return reply

        scheme = request_scheme(scope, req)
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
            if ws and source is TokenSource.COOKIE and not self.origin_allowed(scope, req):
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
        return Route(
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
