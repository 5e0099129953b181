"""Header, cookie, query and Location rewriting for the proxy, on raw bytes.

Everything here works on the bytes an ASGI server hands over, so that what the proxy does
not have to touch reaches the other side byte for byte (cookie order and spelling, percent
encoding, repeated headers). Fast paths first: most requests carry no lab credential in
their query and no `Connection` header naming extra hop-by-hop headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from servicelab.credentials import COOKIE_NAME, QUERY_PARAM
from servicelab.proxy.dates import http_date

#: Hop-by-hop headers (RFC 9110 §7.6.1) and their common non-standard relatives. Never
#: forwarded either way; names listed in `Connection` are removed too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Request headers that claim who the client is, where it came from or what it asked
#: for, beyond `X-Forwarded-*` and `X-Lab-*` (matched by prefix). Services and the
#: frameworks they use believe them, so only the proxy may set them.
_FORGEABLE = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-client-ip",
        b"true-client-ip",
    }
)
#: Prefixes of request headers only the proxy sets: forwarding, the lab's identity
#: headers, and `X-Sl-*`, which the nginx plane passes between its own parts (reserved on
#: both planes, so that both promise the same).
FORGEABLE_PREFIXES = (b"x-forwarded-", b"x-lab-", b"x-sl-")
#: What a trusted front proxy may tell (with `trust_forwarded`).
_TRUSTED_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")


def is_forgeable(name: bytes) -> bool:
    """A lower-case request header the proxy removes before adding its own: every name
    with one of `FORGEABLE_PREFIXES`, the names in `_FORGEABLE`, and any name with `_`
    (WSGI servers and CGI turn `X_Lab_User` into the same variable as `X-Lab-User`)."""
    return (
        b"_" in name
        or name in _FORGEABLE
        or (name.startswith(b"x-") and name.startswith(FORGEABLE_PREFIXES))
    )


#: Headers a WebSocket client library makes itself for the upstream handshake.
WS_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)

_COOKIE_PREFIX = COOKIE_NAME.encode()
_QUERY_PREFIX = QUERY_PARAM.encode()


@dataclass(slots=True)
class IncomingRequest:
    """What the proxy needs from a request's headers, collected in one pass."""

    #: End-to-end headers to pass on unchanged (no hop-by-hop, none that `is_forgeable`,
    #: no Cookie, Authorization, Expect).
    passed: list[tuple[bytes, bytes]] = field(default_factory=list)
    authorization: bytes | None = None
    #: Cookie header values with the lab cookie already removed (empty ones dropped).
    cookies: list[bytes] = field(default_factory=list)
    lab_cookie: str | None = None
    accept: bytes = b""
    host: bytes | None = None
    origin: bytes | None = None
    #: From a trusted front proxy only.
    forwarded_for: bytes | None = None
    forwarded_proto: bytes | None = None
    forwarded_host: bytes | None = None
    has_body: bool = False
    #: The body's size is announced (Content-Length); else it comes chunked.
    has_length: bool = False


def parse_request(headers: list[tuple[bytes, bytes]], trust_forwarded: bool) -> IncomingRequest:
    req = IncomingRequest()
    passed = req.passed
    connection: bytes | None = None
    for name, value in headers:
        # ASGI servers give lower-case names already; nothing below relies on more.
        if name in HOP_BY_HOP or name.startswith(b"proxy-"):
            if name == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif name == b"transfer-encoding":
                req.has_body = True
            continue
        if name == b"host":
            req.host = value
            passed.append((name, value))
        elif name == b"cookie":
            token, rest = strip_lab_cookie(value)
            if token is not None and req.lab_cookie is None:
                req.lab_cookie = token
            if rest:
                req.cookies.append(rest)
        elif name == b"authorization":
            if req.authorization is None:
                req.authorization = value
        elif is_forgeable(name):
            # The proxy's word, never the client's; a trusted front proxy's X-Forwarded-*
            # are kept to be extended.
            if trust_forwarded and name in _TRUSTED_FORWARDED:
                if name == b"x-forwarded-for":
                    req.forwarded_for = value
                elif name == b"x-forwarded-proto":
                    req.forwarded_proto = value
                else:
                    req.forwarded_host = value
        elif name == b"expect":
            # `Expect: 100-continue` was answered by the ASGI server already; the upstream
            # gets the body at once.
            continue
        else:
            if name == b"accept":
                req.accept = value
            elif name == b"origin":
                req.origin = value
            elif name == b"content-length":
                req.has_length = True
                req.has_body = value.strip() not in (b"0", b"")
            passed.append((name, value))
    if connection is not None:
        named = {t.strip().lower() for t in connection.split(b",")} - {b"close", b"keep-alive"}
        if named:
            req.passed = [(n, v) for n, v in passed if n not in named]
    return req


def strip_lab_cookie(value: bytes) -> tuple[str | None, bytes]:
    """Remove the lab cookie from one Cookie header value, keeping the others as they were.

    Returns (the lab token or None, the rest). The rest keeps every other cookie byte for
    byte: services may sign or checksum their own cookies.
    """
    if _COOKIE_PREFIX not in value:
        return None, value
    token: str | None = None
    kept: list[bytes] = []
    for piece in value.split(b";"):
        name, eq, val = piece.partition(b"=")
        if eq and name.strip() == _COOKIE_PREFIX:
            if token is None:
                raw = val.strip()
                if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
                    raw = raw[1:-1]
                token = raw.decode("latin-1") or None
            continue
        kept.append(piece)
    return token, b";".join(kept).lstrip()


def strip_lab_query(query: bytes) -> tuple[str | None, bytes]:
    """Remove `lab_token` from a raw query string; keep every other byte as it was."""
    if not query or (_QUERY_PREFIX not in query and b"%" not in query):
        return None, query
    token: str | None = None
    kept: list[bytes] = []
    for piece in query.split(b"&"):
        name, _, val = piece.partition(b"=")
        if name == _QUERY_PREFIX or (b"%" in name and _unquote(name) == QUERY_PARAM):
            if token is None:
                token = _unquote(val) or None
            continue
        kept.append(piece)
    if len(kept) == query.count(b"&") + 1:
        return None, query
    return token, b"&".join(kept)


def _unquote(value: bytes) -> str:
    return unquote_plus(value.decode("latin-1"))


def is_browser(accept: bytes) -> bool:
    return b"text/html" in accept


def rewrite_location(
    location: bytes, origins: tuple[bytes, ...], prefix: bytes, strip: bool
) -> bytes:
    """Point a redirect from the service back through the proxy.

    `origins` are the lower-case `scheme://host[:port]` forms that mean "this service":
    its own address, and the lab's address as the service saw it in `Host` (frameworks
    build absolute redirects from it, e.g. FastAPI's trailing-slash redirect). Such an
    absolute URL loses its origin; then, with `strip`, an absolute path gets the route
    prefix, unless the service put it there itself (it read `X-Forwarded-Prefix`).
    Relative references and other origins are left alone.
    """
    if location[:1] == b"/":
        if location[1:2] == b"/":
            return location  # scheme-relative: another host
        path = location
    else:
        lowered = location[:200].lower()
        for origin in origins:
            n = len(origin)
            if lowered.startswith(origin) and location[n : n + 1] in (b"", b"/", b"?", b"#"):
                path = location[n:]
                if path[:1] != b"/":
                    path = b"/" + path
                break
        else:
            return location
    if strip and not (
        path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in (b"", b"/", b"?", b"#")
    ):
        return prefix + path
    return path


def response_headers(
    raw: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
    origins: tuple[bytes, ...],
    prefix: bytes,
    strip: bool,
) -> list[tuple[bytes, bytes]]:
    """The service's response headers as the client gets them: hop-by-hop headers gone,
    `Location` pointed back through the proxy, everything else (every `Set-Cookie`)
    as it came, in order; the lab's `Date` when the service sent none."""
    out: list[tuple[bytes, bytes]] = []
    connection: bytes | None = None
    chunked = False
    has_date = False
    for name, value in raw:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname.startswith(b"proxy-"):
            if lname == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif lname == b"transfer-encoding":
                chunked = True
            continue
        if lname == b"location":
            value = rewrite_location(value, origins, prefix, strip)
        elif lname == b"date":
            has_date = True
        out.append((lname, value))
    if not has_date:
        out.append((b"date", http_date()))
    if chunked:
        # RFC 9112 §6.3: with Transfer-Encoding, a Content-Length is to be ignored.
        out = [(n, v) for n, v in out if n != b"content-length"]
    if connection is not None:
        named = {t.strip().lower() for t in connection.split(b",")} - {b"close", b"keep-alive"}
        if named:
            out = [(n, v) for n, v in out if n not in named]
    return out
