"""The typed context of the nginx plane's templates (templates/nginx.conf.j2 and
templates/sl.lua.j2), and their rendering.

The configuration's text lives in the templates, where it reads as nginx and Lua; what
varies with the lab's settings is computed in nginx_conf.py and handed over here, every
value already in its nginx form (quoted, with units), so the templates hold no rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


@dataclass(frozen=True)
class ErrorReply:
    """A reply nginx makes itself, in the lab's error envelope."""

    status: int
    #: The envelope as an nginx string literal, its time `$sl_now`.
    body: str
    retry_after: int | None = None


@dataclass(frozen=True)
class LuaContext:
    """The Lua tables of `init_by_lua_block`, as Lua table constructors' contents."""

    exact: str
    keep: str
    prefixes: str
    fields: str
    headers: str
    lab_cookies: str
    decisions_kept: int
    decision_ttl: float


@dataclass(frozen=True)
class RouteTokens:
    """The service route's regexes as nginx tokens (`~` included where nginx wants it),
    from servicelab.service_route."""

    location: str
    prefix: str
    rest: str
    foreign_path: str


@dataclass(frozen=True)
class ConfContext:
    """Everything nginx.conf.j2 fills in."""

    modules: Path
    #: The `user` directive with its newline, or "".
    user: str
    workers: int | str
    pid: Path
    error_log: Path
    tmp: Path
    socket: Path
    routes: Path
    listen: str
    header_timeout: str
    read_timeout: str
    connect_timeout: str
    trust_forwarded: bool
    fwd_for: str
    fwd_proto: str
    fwd_host: str
    auth_path: str
    #: The plane's key as an nginx string literal.
    key: str
    decision_key: str
    route: RouteTokens
    lab_down: ErrorReply
    refused: ErrorReply
    timeout: ErrorReply
    lua: LuaContext


def render_conf(context: ConfContext) -> str:
    """nginx.conf, with the Lua library in it."""
    return _ENV.get_template("nginx.conf.j2").render(asdict(context))
