"""The service-origin side of the proxy: its cookie, the code exchange, what it refuses.

The handshake, for a browser that opens `https://<label>.<domain>/<route>` without its
cookie:

1. the service host redirects to the same path on the lab (`ProxySettings.lab_url`);
2. the lab (after its log-in page if needed, and a project check: 404 for a non-member)
   redirects back to `<service origin>/_servicelab/callback?code=<one-time code>`;
3. the service host claims the code once, sets its own cookie and redirects to the path
   the code names (the clean URL).

`?lab_token=` on a service URL ends the same way (cookie + clean URL), on either host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from servicelab.credentials import COOKIE_NAME
from servicelab.proxy.contract import AuthError, Authorizer, CodeStore, Principal, ProxySettings
from servicelab.proxy.grants import CODE_TTL, GRANT_TTL, Grant, code_digest, sign, verify
from servicelab.proxy.headers import IncomingRequest
from servicelab.proxy.replies import Reply, error, redirect
from servicelab.service_origins import (
    CALLBACK_PATH,
    SECURE_SERVICE_COOKIE,
    SERVICE_COOKIE,
    from_own_origin,
    split_host,
)

#: Cookies only the lab sets: a service's `Set-Cookie` for one of them is dropped.
LAB_COOKIES = frozenset(
    n.lower().encode() for n in (COOKIE_NAME, SERVICE_COOKIE, SECURE_SERVICE_COOKIE)
)
_GRANT_COOKIES = (SERVICE_COOKIE.encode(), SECURE_SERVICE_COOKIE.encode())
#: On every redirect that carries or sets a credential.
NO_STORE = ((b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"))
_COOKIE_SAFE = re.compile(r"[A-Za-z0-9._~+/=\-]+")


@dataclass(slots=True, frozen=True)
class Site:
    """The service a service host (`<label>.<domain>`) belongs to, and its origin; empty
    names for a host under the domain that names no service."""

    project: str
    service: str
    origin: str


class Handshake:
    """The redirects of the handshake, on both hosts."""

    def __init__(self, settings: ProxySettings, codes: CodeStore, authorizer: Authorizer) -> None:
        self.settings = settings
        self.codes = codes
        self.authorizer = authorizer

    def to_lab(self, scheme: str, req: IncomingRequest, raw_path: bytes, query: bytes) -> Reply:
        """Step 1: a browser without the service's cookie goes to the same path on the lab."""
        lab = self.settings.lab_url.rstrip("/")
        if not lab:
            _, port = split_host((req.forwarded_host or req.host or b"").decode("latin-1"))
            lab = f"{scheme}://localhost{port}"
        return redirect(lab.encode() + raw_path + (b"?" + query if query else b""), *NO_STORE)

    async def code_reply(
        self, principal: Principal, project: str, service: str, origin: str, target: bytes
    ) -> Reply:
        """Step 2, on the lab: a one-time code for this service, sent to its origin's
        callback; `target` (path and query) is where the browser ends."""
        if principal.token_id is None:
            return error(500, "The lab could not open a session for this service.")
        expires = time.time() + CODE_TTL
        code = sign(
            self.settings.secret_key,
            Grant(
                "code",
                principal.token_id,
                project.lower(),
                service.lower(),
                expires,
                target.decode("latin-1"),
            ),
        )
        await self.codes.add(code_digest(code), expires)
        return redirect(f"{origin}{CALLBACK_PATH.decode()}?code={code}".encode(), *NO_STORE)

    async def callback(self, query_string: bytes, scheme: str, site: Site) -> Reply:
        """Step 3, on the service host: claim the code once, set the cookie."""
        code = ""
        for piece in query_string.split(b"&"):
            name, _, value = piece.partition(b"=")
            if name == b"code":
                code = unquote(value.decode("latin-1"))
        granted = verify(self.settings.secret_key, code, "code")
        if (
            granted is None
            or (granted.project, granted.service) != (site.project, site.service)
            or not local_path(granted.next)
            or not await self.codes.claim(code_digest(code))
        ):
            return error(
                400, "This sign-in link has expired or was already used: open the service again."
            )
        try:
            principal = await self.authorizer.authorize_parent(granted.parent, site.project)
        except AuthError as exc:
            return error(exc.status, exc.message)
        target = granted.next.encode("latin-1")
        return self.grant_reply(principal, site.project, site.service, scheme, target)

    def grant_reply(
        self, principal: Principal, project: str, service: str, scheme: str, target: bytes
    ) -> Reply:
        """The service origin's cookie, and a redirect to the clean URL `target`."""
        if principal.token_id is None:
            return error(500, "The lab could not open a session for this service.")
        expires = time.time() + GRANT_TTL
        value = sign(
            self.settings.secret_key,
            Grant("grant", principal.token_id, project.lower(), service.lower(), expires),
        )
        cookie = (b"set-cookie", grant_cookie(value, scheme == "https"))
        return redirect(target, cookie, *NO_STORE)


def lab_cookie_reply(scheme: str, target: bytes, token: str) -> Reply:
    """Without service origins, `lab_token` becomes the lab cookie, as in ML Lab."""
    if not _COOKIE_SAFE.fullmatch(token):
        return error(400, "lab_token holds characters a cookie cannot carry.")
    cookie = f"{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Lax"
    if scheme == "https":
        cookie += "; Secure"
    return redirect(target, (b"set-cookie", cookie.encode()), *NO_STORE)


def grant_cookie(value: str, https: bool) -> bytes:
    """The service origin's cookie: host-only (no Domain), HttpOnly, SameSite=Lax, and
    under https `Secure` with the `__Host-` prefix, so no other host can set it."""
    if https:
        return f"{SECURE_SERVICE_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Secure".encode()
    return f"{SERVICE_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax".encode()


def take_grant_cookie(values: list[bytes]) -> tuple[str | None, list[bytes]]:
    """Remove the service-origin cookie from Cookie header values (the others stay byte
    for byte); returns its value and the rest."""
    found: str | None = None
    rest: list[bytes] = []
    for value in values:
        if b"servicelab_service" not in value:
            rest.append(value)
            continue
        kept: list[bytes] = []
        for piece in value.split(b";"):
            name, eq, val = piece.partition(b"=")
            if eq and name.strip() in _GRANT_COOKIES:
                if found is None:
                    found = val.strip().strip(b'"').decode("latin-1") or None
                continue
            kept.append(piece)
        joined = b";".join(kept).lstrip()
        if joined:
            rest.append(joined)
    return found, rest


def drop_lab_set_cookies(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A service's response headers without any `Set-Cookie` for the lab's cookies."""
    for name, value in headers:
        if name == b"set-cookie" and _cookie_name(value) in LAB_COOKIES:
            break
    else:
        return headers
    return [
        (n, v) for n, v in headers if not (n == b"set-cookie" and _cookie_name(v) in LAB_COOKIES)
    ]


def _cookie_name(set_cookie: bytes) -> bytes:
    return set_cookie.split(b"=", 1)[0].strip().lower()


def header(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def cookie_request_allowed(
    headers: list[tuple[bytes, bytes]], method: str, ws: bool, own_origins: Iterable[str]
) -> bool:
    """May a request carrying the service origin's cookie be served?

    From the service's own origin, yes. From anywhere else only a top-level GET
    navigation (a link to the service): another page (another service on the same
    wildcard domain, to which SameSite=Lax still sends the cookie) gets no credentialed
    fetch, form POST or WebSocket, whatever CORS headers the service sends.
    """
    own = list(own_origins)
    origin = header(headers, b"origin")
    if ws:
        return origin is None or origin.rstrip("/").lower() in own
    site = header(headers, b"sec-fetch-site")
    if from_own_origin(site, origin, own):
        return True
    mode = header(headers, b"sec-fetch-mode")
    return site is not None and mode == "navigate" and method in ("GET", "HEAD")


def local_path(value: str) -> bool:
    """Is `value` a path on the same host (never `//host` or a scheme)?"""
    return (
        value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and not any(c in value for c in "\r\n\t")
    )
