"""The service route, `/api/projects/<project>/services/<service>/<port>/<rest>`, once.

The proxy matches it (both planes: Python for the embedded one, PCRE in nginx's
configuration for the other), the service manager hands its prefix to services
(`LAB_SERVICE_PATH`, `LAB_SERVICE_URL`), the API shows it. Neither proxy nor services
owns it, so both import it from here, and every form of the pattern is built from the
same three parts below: a name is one path segment, still percent-encoded (`%2F` stays
inside it), a port 1 to 5 digits (its range, 1-65535, is the admission's rule, which
answers 404 for the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What every service route starts with: a cheap test before the regular expression.
ROUTE_START = b"/api/projects/"
#: A project or service name in a path (one segment, percent-encoded).
_NAME = "[^/]+"
#: The same in nginx's `$request_uri`, which still has the query: a name stops at `?`.
_URI_NAME = "[^/?]+"
_PORT = "[0-9]{1,5}"


def _prefix(name: str, group: bool = False) -> str:
    """The route prefix (no trailing slash) with `name` for both names; with `group`,
    names and port captured (the Python form)."""
    if group:
        return f"/api/projects/({name})/services/({name})/({_PORT})"
    return f"/api/projects/{name}/services/{name}/{_PORT}"


#: A whole raw path (no query) under a service route: groups project, service (both
#: percent-encoded), port, and the rest (None when nothing follows the port).
ROUTE = re.compile(rf"{_prefix(_NAME, group=True)}(/.*)?".encode(), re.DOTALL)


def service_path(project: str, service: str) -> str:
    """LAB_SERVICE_PATH: the route prefix to which a service appends `<port>/`."""
    return f"/api/projects/{project}/services/{service}/"


def port_path(project: str, service: str, port: int, path: str = "/") -> str:
    """The lab's path of `path` on one port of a service."""
    return f"{service_path(project, service)}{port}{path}"


@dataclass(frozen=True)
class NginxRouteRegexes:
    """The route's forms in the nginx data plane's configuration (PCRE, unquoted; a
    form with `{` must be quoted in the file, see `nginx_quote`)."""

    #: `location ~`: a request (its decoded `$uri`) nginx forwards after the lab's
    #: decision; a route without `/` after the port is the lab's (it redirects).
    location: str
    #: `map $request_uri`: the route prefix, captured as `r`.
    prefix: str
    #: `map $request_uri`: the path after the prefix (no query), captured as `r`.
    rest: str
    #: `proxy_redirect ~`: an absolute path in a `Location` that is not under a route
    #: prefix already, captured as group 1.
    foreign_path: str


def nginx_regexes() -> NginxRouteRegexes:
    """The PCRE forms of the route that nginx.conf needs, from the same parts as `ROUTE`."""
    uri_prefix = _prefix(_URI_NAME)
    return NginxRouteRegexes(
        location=f"^{_prefix(_NAME)}/",
        prefix=f"^(?<r>{uri_prefix})/",
        rest=f"^{uri_prefix}(?<r>/[^?]*)",
        foreign_path=f"^(/(?!/)(?!{_prefix(_NAME)[1:]}(?:[/?#]|$)).*)$",
    )


def nginx_quote(regex: str) -> str:
    """A regex as an nginx token: double-quoted when it has what nginx's parser would read
    itself (`{`, `;`, spaces), as is otherwise."""
    if any(c in regex for c in "{}; \t'\""):
        return '"' + regex.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return regex
