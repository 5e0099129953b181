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
from servicelab.proxy.nginx_worker import Worker, make_run_folder, run_folder
from servicelab.proxy.origins import SECURE_SERVICE_COOKIE, SERVICE_COOKIE
from servicelab.runtimes.base import Address

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


def _lua_library(trust_forwarded: bool) -> str:
    """The plane's Lua, loaded once when nginx starts (`init_by_lua_block`): functions the
    phases call, so that a request runs one Lua handler before it is proxied, not two.

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
    exact = ", ".join(f'["{n}"] = true' for n in FORGEABLE_EXACT)
    keep = ", ".join(f'["{n}"] = true' for n in TRUSTED_FORWARDED) if trust_forwarded else ""
    prefixes = ", ".join(f'"{p}"' for p in FORGEABLE_PREFIXES)
    fields = ", ".join(f'"sl_{f}"' for f in _FIELDS)
    headers = ", ".join(f'"x-sl-{f}"' for f in _FIELDS)
    lab_cookies = ", ".join(f'["{n.lower()}"] = true' for n in LAB_COOKIES)
    return f"""
  init_by_lua_block {{
    sl = {{}}
    local exact = {{ {exact} }}
    local keep = {{ {keep} }}
    local prefixes = {{ {prefixes} }}
    local fields = {{ {fields} }}
    local headers = {{ {headers} }}
    local lab_cookies = {{ {lab_cookies} }}
    local decisions = require("resty.lrucache").new({DECISIONS_KEPT})

    function sl.strip_headers()
      for name, _ in pairs(ngx.req.get_headers(0)) do
        if not keep[name] then
          local forged = exact[name] or string.find(name, "_", 1, true) ~= nil
          if not forged then
            for _, p in ipairs(prefixes) do
              if string.sub(name, 1, #p) == p then forged = true break end
            end
          end
          if forged then ngx.req.clear_header(name) end
        end
      end
    end

    function sl.decide()
      local key = ngx.var.sl_key
      local values = decisions:get(key)
      if values == nil then
        local res = ngx.location.capture("/_sl_auth", {{ copy_all_vars = true }})
        if res.status == 401 then return ngx.exec("@sl_lab") end
        if res.status ~= 200 then return ngx.exec("@sl_lab_down") end
        values = {{}}
        for i, name in ipairs(headers) do
          local v = res.header[name]
          if type(v) == "table" then v = v[1] end
          values[i] = v or ""
        end
        decisions:set(key, values, {DECISION_TTL})
      end
      local var = ngx.var
      for i, name in ipairs(fields) do var[name] = values[i] end
    end

    function sl.service_headers()
      local header = ngx.header
      if header["Date"] == nil then header["Date"] = ngx.http_time(ngx.time()) end
      local cookies = header["Set-Cookie"]
      if cookies then
        if type(cookies) == "string" then cookies = {{ cookies }} end
        local kept = {{}}
        for _, c in ipairs(cookies) do
          local name = string.lower((string.match(c, "^%s*([^=]*)") or ""):gsub("%s+$", ""))
          if not lab_cookies[name] then kept[#kept + 1] = c end
        end
        if #kept ~= #cookies then
          header["Set-Cookie"] = #kept > 0 and kept or nil
        end
      end
    end
  }}
  rewrite_by_lua_block {{ sl.strip_headers() }}"""


def _error_return(status: int, message: str, retry_after: int | None = None) -> str:
    """The lab's error envelope as nginx's own reply, its time (epoch ms) filled in by
    nginx (a fixed one would also change the configuration at every lab start)."""
    envelope = json.loads(error_bytes(status, message))
    envelope["metadata"]["time"] = "@NOW@"
    body = json.dumps(envelope).replace('"@NOW@"', "$sl_now")
    extra = f"add_header Retry-After {retry_after} always;\n      " if retry_after else ""
    return (
        "default_type application/json;\n"
        "      set_by_lua_block $sl_now { return string.format('%d', ngx.now() * 1000) }\n"
        f"      {extra}return {status} {_quote(body)};"
    )


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
#: An absolute path in a `Location` that the service did not put under a route prefix
#: itself: it gets the prefix when the service's prefix is stripped.
_ABSOLUTE_PATH = "~^(/(?!/)(?!api/projects/[^/]+/services/[^/]+/[0-9]+(?:[/?#]|$)).*)$"
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


def nginx_conf(settings: PlaneSettings, layout: NginxLayout) -> str:
    s = settings
    listen = f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"
    tmp = layout.tmp
    user = _user_directive(layout.worker)
    if s.trust_forwarded:
        fwd_for = "$proxy_add_x_forwarded_for"
        fwd_proto = "$sl_fwd_proto"
        fwd_host = "$sl_fwd_host"
        trusted_maps = """
  map $http_x_forwarded_proto $sl_fwd_proto { "" $scheme; ~^\\s*(?<p>[^,\\s]+) $p; }
  map $http_x_forwarded_host $sl_fwd_host { "" $http_host; ~^\\s*(?<h>[^,\\s]+) $h; }"""
    else:
        fwd_for, fwd_proto, fwd_host, trusted_maps = "$remote_addr", "$scheme", "$http_host", ""
    common = f"""proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $sl_connection;
      proxy_set_header X-Forwarded-For {fwd_for};
      proxy_set_header X-Forwarded-Proto {fwd_proto};
      proxy_set_header X-Forwarded-Host {fwd_host};"""
    lab_location = f"""{common}
      proxy_pass http://sl_lab;
      error_page 502 504 = @sl_lab_down;"""
    return f"""# Generated by servicelab (SERVICELAB_PROXY=nginx); rewritten at every lab start.
load_module {MODULES}/ndk_http_module.so;
load_module {MODULES}/ngx_http_lua_module.so;
{user}worker_processes {s.workers or "auto"};
# The route location, the maps of the prefix and `proxy_redirect` match regular
# expressions on every request: compiled, not interpreted.
pcre_jit on;
pid {layout.pid};
error_log {layout.error_log} warn;
events {{ worker_connections 8192; }}

http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size 0;
  client_header_timeout {_timeout(s.header_timeout)};
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  proxy_buffering off;
  proxy_request_buffering off;
  proxy_read_timeout {_timeout(s.read_timeout)};
  proxy_send_timeout {_timeout(s.read_timeout)};
  proxy_connect_timeout {_timeout(s.connect_timeout)};
  lua_package_path "/usr/share/lua/5.1/?.lua;;";

  map $http_upgrade $sl_connection {{ default upgrade; "" ""; }}
  map $request_uri $sl_prefix_of_uri {{
    ~^(?<r>/api/projects/[^/?]+/services/[^/?]+/[0-9]+)/ $r;
    default "";
  }}
  map $request_uri $sl_rest {{
    ~^/api/projects/[^/?]+/services/[^/?]+/[0-9]+(?<r>/[^?]*) $r;
    default /;
  }}
  map $request_uri $sl_fullpath {{ ~^(?<p>[^?]*) $p; }}
  map $sl_strip $sl_path {{ "1" $sl_rest; default $sl_fullpath; }}
  map $sl_strip $sl_location {{ "1" $sl_prefix; default ""; }}{trusted_maps}

  upstream sl_lab {{ server unix:{layout.socket}; keepalive 64; }}
  include {layout.routes};
{_lua_library(s.trust_forwarded)}

  server {{
    listen {listen} reuseport;

    # The lab: API, UI, the handshake's callback, and every request it serves itself.
    location / {{
      {lab_location}
    }}
    location @sl_lab {{
      {lab_location}
    }}
    location @sl_lab_down {{
      {_error_return(503, "The lab is restarting: try again in a moment.", 2)}
    }}
    location = {AUTH_PATH} {{ return 404; }}

    # A service route: the lab decides, nginx forwards.
    location ~ ^/api/projects/[^/]+/services/[^/]+/[0-9]+/ {{
      set $sl_prefix $sl_prefix_of_uri;
      set $sl_uri $request_uri;
      set $sl_key "{_DECISION_KEY}";
      set $sl_method $request_method;
      set $sl_upstream "";
      set $sl_address "";
      set $sl_strip "";
      set $sl_query "";
      set $sl_cookie "";
      set $sl_authorization "";
      set $sl_user "";
      set $sl_project "";
      rewrite_by_lua_block {{ sl.strip_headers() sl.decide() }}
      {common}
      proxy_set_header Cookie $sl_cookie;
      proxy_set_header Authorization $sl_authorization;
      proxy_set_header X-Forwarded-Prefix $sl_prefix;
      proxy_set_header X-Lab-User $sl_user;
      proxy_set_header X-Lab-Project $sl_project;
      proxy_pass_header Server;
      proxy_pass_header Date;
      proxy_redirect http://$sl_address $sl_location;
      proxy_redirect http://$http_host $sl_location;
      proxy_redirect https://$http_host $sl_location;
      proxy_redirect {_ABSOLUTE_PATH} $sl_location$1;
      proxy_pass http://$sl_target$sl_path$sl_query;
      error_page 502 = @sl_refused;
      error_page 504 = @sl_timeout;
      header_filter_by_lua_block {{ sl.service_headers() }}
    }}
    location @sl_refused {{
      {_error_return(502, _REFUSED)}
    }}
    location @sl_timeout {{
      {_error_return(504, "The service did not answer in time.")}
    }}
    location = /_sl_auth {{
      internal;
      proxy_http_version 1.1;
      proxy_buffering on;
      proxy_pass http://sl_lab{AUTH_PATH};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Sl-Key {_quote(s.key)};
      proxy_set_header X-Sl-Uri $sl_uri;
      proxy_set_header X-Sl-Method $sl_method;
      proxy_set_header X-Sl-Scheme $scheme;
      proxy_set_header X-Sl-Upgrade $http_upgrade;
    }}
  }}
}}
"""
