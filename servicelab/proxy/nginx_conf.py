"""The nginx data plane's configuration, generated from the lab's settings and routes.

nginx is the front door on the public port; the lab listens behind it on a Unix socket.
A request for a service route is checked by a subrequest to the lab's auth endpoint (the
same `ProxyApp` admission as the embedded plane: same `TokenAuthority`, same token order,
same service-origin rules). The lab answers 200 with what nginx needs to forward the
request itself (upstream, cleaned Cookie, Authorization or not, the prefix rule), and
each nginx worker keeps that answer for 1 s (the issue allows 2), under a key of
everything the decision reads. Any other answer means "let the lab serve this one":
login redirects, handshakes, 401/403/404, 503 + Retry-After, the sandboxed fallback. So
every rule lives once, in Python, and nginx only moves bytes for requests the lab has
admitted.

Lua (Debian's libnginx-mod-http-lua) does what plain nginx cannot: remove request
headers by pattern (`X-Forwarded-*`, `X-Lab-*`, ...) before anything sees them, drop a
service's `Set-Cookie` for the lab's own cookie names, and keep decisions in memory
(`auth_request` with `proxy_cache`, the no-Lua way, costs a subrequest and a cache file
read per request: a third of the requests/s).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from servicelab.credentials import COOKIE_NAME
from servicelab.envelope import error_bytes
from servicelab.proxy.headers import _FORGEABLE, _TRUSTED_FORWARDED
from servicelab.proxy.headers import FORGEABLE_PREFIXES as HEADER_PREFIXES
from servicelab.proxy.nginx_template import (
    ConfContext,
    ErrorReply,
    LuaContext,
    RouteTokens,
    render_conf,
)
from servicelab.proxy.nginx_worker import Worker, make_run_folder, run_folder
from servicelab.runtimes.base import Address
from servicelab.service_origins import SECURE_SERVICE_COOKIE, SERVICE_COOKIE
from servicelab.service_route import nginx_quote, nginx_regexes

#: The lab's endpoint for nginx's decision subrequests; refused to anyone without the key.
AUTH_PATH = "/_servicelab/nginx-auth"
MODULES = Path("/usr/lib/nginx/modules")
#: Request headers removed by pattern before anything else: the embedded plane's rule
#: (headers.py `is_forgeable`; `X-Sl-*` are the names nginx and the lab talk in).
#: Headers with `_` never pass nginx at all (`underscores_in_headers off`).
FORGEABLE_EXACT = tuple(sorted(n.decode() for n in _FORGEABLE))
FORGEABLE_PREFIXES = tuple(p.decode() for p in HEADER_PREFIXES)
TRUSTED_FORWARDED = tuple(n.decode() for n in _TRUSTED_FORWARDED)
LAB_COOKIES = (COOKIE_NAME, SERVICE_COOKIE, SECURE_SERVICE_COOKIE)


@dataclass(frozen=True)
class NginxLayout:
    """Where the plane keeps its files: `<data_dir>/nginx`, private to the lab's user;
    with a `worker` user (the lab is root), the socket and temporary folders, which the
    workers must reach, in a run folder of their own (`nginx_worker`)."""

    root: Path
    worker: Worker | None = None

    @property
    def run(self) -> Path:
        """The folder of the socket and of `tmp/`."""
        return run_folder(self.root) if self.worker else self.root

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def routes(self) -> Path:
        return self.root / "routes.conf"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def socket(self) -> Path:
        """The lab listens here; only nginx (its workers' user, or the lab's) can connect."""
        return self.run / "lab.sock"

    @property
    def tmp(self) -> Path:
        return self.run / "tmp"

    def make(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        if self.worker:
            make_run_folder(self.run, self.worker)
        else:
            self.tmp.mkdir(exist_ok=True)


@dataclass(frozen=True)
class PlaneSettings:
    host: str
    port: int
    #: Sent by nginx with each auth subrequest; the lab answers only that.
    key: str
    read_timeout: float = 0
    connect_timeout: float = 10.0
    trust_forwarded: bool = False
    workers: int = 0  # 0: one per core
    #: Seconds a client may take to send a request's headers (`client_header_timeout`).
    header_timeout: float = 0


def upstream_name(address: Address) -> str:
    """The name of the keep-alive upstream group for one service address."""
    host = "".join(c if c.isalnum() else "_" for c in address.host)
    return f"sl_{host}_{address.port}"


def _quote(value: str) -> str:
    """An nginx string literal (single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def routes_conf(addresses: Iterable[Address]) -> str:
    """One keep-alive upstream per service address, and the map that picks it. A name the
    lab returns that is not (yet) here falls back to the literal address: correct, only
    without keep-alive until the reload that adds it."""
    unique = sorted({(a.host, a.port) for a in addresses})
    lines = ["# Generated by servicelab from the route table; rewritten on every change."]
    names = []
    for host, port in unique:
        address = Address(host, port)
        name = upstream_name(address)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines.append(f"upstream {name} {{ server {target}; keepalive 16; }}")
        names.append(name)
    lines.append("map $sl_upstream $sl_target {")
    lines.append("  default $sl_address;")
    lines.extend(f"  {name} {name};" for name in names)
    lines.append("}")
    return "\n".join(lines) + "\n"


#: The decision's fields, in the order nginx keeps them.
_FIELDS = ("upstream", "address", "strip", "query", "cookie", "authorization", "user", "project")
#: Seconds nginx reuses a decision: the issue allows 2; with the lab's own caches (2.5 s)
#: a revoked token stops working within 5 s.
DECISION_TTL = 1.0
#: Decisions each nginx worker keeps (least recently used go first).
DECISIONS_KEPT = 10_000


def _lua_context(trust_forwarded: bool) -> LuaContext:
    """The values of the plane's Lua (templates/sl.lua.j2), loaded once when nginx starts
    (`init_by_lua_block`): functions the phases call, so that a request runs one Lua
    handler before it is proxied, not two.

    - `sl.strip_headers()`: remove request headers by pattern (the embedded plane's rule,
      headers.py `is_forgeable`; `X-Sl-*` are the names nginx and the lab talk in).
    - `sl.decide()`: the lab's decision for this request from the worker's cache, else
      from the lab (a subrequest to its auth endpoint), kept `DECISION_TTL` seconds. A
      cache in the worker's own memory: no lock, no copy and no parsing on a hit, which
      `lua_shared_dict` (or `auth_request` with `proxy_cache`) would cost per request.
    - `sl.service_headers()`: drop a service's `Set-Cookie` for the lab's cookie names,
      and date a response the service sent without `Date` (nginx does not, with
      `proxy_pass_header Date`; see servicelab.proxy.dates).
    """
    keep = ", ".join(f'["{n}"] = true' for n in TRUSTED_FORWARDED) if trust_forwarded else ""
    return LuaContext(
        exact=", ".join(f'["{n}"] = true' for n in FORGEABLE_EXACT),
        keep=keep,
        prefixes=", ".join(f'"{p}"' for p in FORGEABLE_PREFIXES),
        fields=", ".join(f'"sl_{f}"' for f in _FIELDS),
        headers=", ".join(f'"x-sl-{f}"' for f in _FIELDS),
        lab_cookies=", ".join(f'["{n.lower()}"] = true' for n in LAB_COOKIES),
        decisions_kept=DECISIONS_KEPT,
        decision_ttl=DECISION_TTL,
    )


def _error_reply(status: int, message: str, retry_after: int | None = None) -> ErrorReply:
    """The lab's error envelope as nginx's own reply, its time (epoch ms) filled in by
    nginx (a fixed one would also change the configuration at every lab start)."""
    envelope = json.loads(error_bytes(status, message))
    envelope["metadata"]["time"] = "@NOW@"
    body = json.dumps(envelope).replace('"@NOW@"', "$sl_now")
    return ErrorReply(status, _quote(body), retry_after)


#: Everything the lab's decision reads, so that a cached decision is the one the lab
#: would make for this request (the route prefix stands for project, service and port).
_DECISION_KEY = "|".join(
    (
        "$request_method",
        "$http_host",
        "$sl_prefix",
        "$args",
        "$http_authorization",
        "$http_cookie",
        "$http_origin",
        # The service-origin cookie's cross-site rule reads these (handshake.py).
        "$http_sec_fetch_site",
        "$http_sec_fetch_mode",
        "$http_upgrade",
        "$http_x_forwarded_host",
        "$http_x_forwarded_proto",
    )
)


def _route_tokens() -> RouteTokens:
    """The service route's regexes (servicelab.service_route) as nginx tokens. The
    `location` matches nginx's `$uri` (percent-decoded), the maps `$request_uri` (as
    sent); `foreign_path` is an absolute path in a `Location` that the service did not
    put under a route prefix itself: it gets the prefix when the service's is stripped."""
    route = nginx_regexes()
    return RouteTokens(
        location="~ " + nginx_quote(route.location),
        prefix=nginx_quote("~" + route.prefix),
        rest=nginx_quote("~" + route.rest),
        foreign_path=nginx_quote("~" + route.foreign_path),
    )


_REFUSED = "The service refused the connection; it may still be starting or have stopped."


def _timeout(seconds: float) -> str:
    # 0 means "no limit" in the lab's settings; nginx needs a number (a year will do).
    return f"{int(seconds * 1000)}ms" if seconds > 0 else "365d"


def _user_directive(worker: Worker | None) -> str:
    """Workers as the unprivileged `worker`; as root only where the operator asked for it
    (`SERVICELAB_NGINX_USER=root`); else nginx cannot switch and says nothing."""
    if worker is not None:
        return f"user {worker.user} {worker.group};\n"
    return "user root;\n" if os.geteuid() == 0 else ""


def _conf_context(settings: PlaneSettings, layout: NginxLayout) -> ConfContext:
    s = settings
    if s.trust_forwarded:
        forwarded = ("$proxy_add_x_forwarded_for", "$sl_fwd_proto", "$sl_fwd_host")
    else:
        forwarded = ("$remote_addr", "$scheme", "$http_host")
    return ConfContext(
        modules=MODULES,
        user=_user_directive(layout.worker),
        workers=s.workers or "auto",
        pid=layout.pid,
        error_log=layout.error_log,
        tmp=layout.tmp,
        socket=layout.socket,
        routes=layout.routes,
        listen=f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
        header_timeout=_timeout(s.header_timeout),
        read_timeout=_timeout(s.read_timeout),
        connect_timeout=_timeout(s.connect_timeout),
        trust_forwarded=s.trust_forwarded,
        fwd_for=forwarded[0],
        fwd_proto=forwarded[1],
        fwd_host=forwarded[2],
        auth_path=AUTH_PATH,
        key=_quote(s.key),
        decision_key=_DECISION_KEY,
        route=_route_tokens(),
        lab_down=_error_reply(503, "The lab is restarting: try again in a moment.", 2),
        refused=_error_reply(502, _REFUSED),
        timeout=_error_reply(504, "The service did not answer in time."),
        lua=_lua_context(s.trust_forwarded),
    )


def nginx_conf(settings: PlaneSettings, layout: NginxLayout) -> str:
    """nginx.conf for the plane (templates/nginx.conf.j2)."""
    return render_conf(_conf_context(settings, layout))
