"""The service-origin side of the proxy: its cookie, the code exchange, what it refuses.

The handshake, for a browser that opens `https://<label>.<domain>/<route>` without its
cookie:

1. the service host redirects to the same path on the lab (`ProxySettings.lab_url`);
2. the lab (after its log-in page if needed, and a project check: 403 for a non-member)
   redirects back to `<service origin>/_servicelab/callback?code=<one-time code>`;
3. the service host claims the code once, sets its own cookie and redirects to the path
   the code names (the clean URL).

`?lab_token=` on a service URL ends the same way (cookie + clean URL), on either host.
"""

from __future__ import annotations

from collections.abc import Iterable

from servicelab.credentials import COOKIE_NAME
from servicelab.proxy.origins import SECURE_SERVICE_COOKIE, SERVICE_COOKIE, from_own_origin

#: Cookies only the lab sets: a service's `Set-Cookie` for one of them is dropped.
LAB_COOKIES = frozenset(
    n.lower().encode() for n in (COOKIE_NAME, SERVICE_COOKIE, SECURE_SERVICE_COOKIE)
)
_GRANT_COOKIES = (SERVICE_COOKIE.encode(), SECURE_SERVICE_COOKIE.encode())
#: On every redirect that carries or sets a credential.
NO_STORE = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]


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
