"""Service origins: a host of its own for every service, and the rules around it.

A service's pages must never run on the lab's origin, or any page a project member
deploys could use the lab session of whoever opens it (JupyterHub's GHSA-7r3h-4ph8-w38g).
So every service is also served on

    <service>--<project>.<service domain>

with the same paths as on the lab. The service domain is `SERVICELAB_SERVICE_DOMAIN`, or
`localhost` when the lab is reached on a loopback host (browsers resolve `*.localhost` to
loopback, RFC 6761). When neither applies, no origin can be formed and the proxy serves
browsers sandboxed instead (see docs/security.md).

This module is pure: names, hosts and the Origin / Sec-Fetch-Site rule, no I/O. It sits
outside the proxy because the service manager forms origins too (`LAB_SERVICE_ORIGIN`)
and the proxy reads the manager's routes: neither package imports the other for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

#: The path on a service host where the lab's one-time code is exchanged for the cookie.
CALLBACK_PATH = b"/_servicelab/callback"
#: The cookie of a service origin (`__Host-` prefixed under https).
SERVICE_COOKIE = "servicelab_service"
SECURE_SERVICE_COOKIE = "__Host-" + SERVICE_COOKIE
#: What a service page served without an origin of its own runs under: scripts, forms and
#: pop-ups work, but the page is an opaque origin (no `allow-same-origin`), so the browser
#: sends it no lab cookie and lets it read nothing of the lab.
SANDBOX_CSP = (
    b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads "
    b"allow-popups-to-escape-sandbox"
)
#: Marks a label as hashed (see `service_label`); no project name is this short.
_HASHED = "h"
_MAX_LABEL = 63


def split_host(host: str) -> tuple[str, str]:
    """`("name", ":port")` of a Host header value, the name lower-cased, the port part
    empty when absent; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            return host[: end + 1], host[end + 1 :] if host[end + 1 : end + 2] == ":" else ""
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and name:
        return name, ":" + port
    return host, ""


def is_loopback(hostname: str) -> bool:
    """Is this host name (no port) the machine itself?"""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def service_label(project: str, service: str) -> str:
    """The DNS label of a service's host: `<service>--<project>`, unique per service.

    Names are `[a-z0-9][a-z0-9-]*[a-z0-9]` of 3 to 63 characters. The first `--` ends the
    service part, so the label parses back as long as the service name has no `--`; a
    name with one, a label over 63 characters, or one a browser would read as punycode
    (`xn--`) gets a hashed label `<name>-<hash>--h` instead, found back by a lookup (no
    project is named `h`: names have at least 3 characters).
    """
    label = f"{service}--{project}"
    if "--" not in service and len(label) <= _MAX_LABEL and not label.startswith("xn--"):
        return label
    digest = hashlib.sha256(f"{project}/{service}".encode()).hexdigest()[:16]
    stem = service.replace("--", "-")[:40].strip("-")
    if stem.startswith("xn-"):
        stem = "s" + stem
    return f"{stem}-{digest}--{_HASHED}"


def parse_label(label: str, names: Iterable[tuple[str, str]] = ()) -> tuple[str, str] | None:
    """`(project, service)` for a label, or None. `names` (every (project, service) the
    lab has) is only read for hashed labels."""
    service, sep, project = label.partition("--")
    if not sep or not service or not project:
        return None
    if project != _HASHED:
        return project, service
    for candidate in names:
        if service_label(*candidate) == label:
            return candidate
    return None


@dataclass(frozen=True)
class OriginPolicy:
    """Which hosts are service hosts, and the origin of each service."""

    #: `SERVICELAB_SERVICE_DOMAIN`; empty: `localhost`, for labs reached on loopback.
    domain: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", self.domain.strip().strip(".").lower())

    def domain_for(self, lab_host: str) -> str | None:
        """The service domain for a lab reached at `lab_host` (a Host value), or None when
        no service origin can be formed (a non-loopback host and no domain set)."""
        if self.domain:
            return self.domain
        return "localhost" if is_loopback(split_host(lab_host)[0]) else None

    def service_origin(self, scheme: str, lab_host: str, project: str, service: str) -> str | None:
        """`scheme://<label>.<domain>[:port]` for a lab reached at `scheme://lab_host`:
        same scheme and port as the lab (a wildcard domain sits behind the same front
        proxy), or None without a domain."""
        domain = self.domain_for(lab_host)
        if domain is None:
            return None
        _, port = split_host(lab_host)
        if (scheme, port) in (("http", ":80"), ("https", ":443")):
            port = ""
        return f"{scheme}://{service_label(project, service)}.{domain}{port}"

    def label_of(self, host: str) -> str | None:
        """The service label when `host` (a Host value) is a service host, else None."""
        hostname, _ = split_host(host)
        suffix = "." + (self.domain or "localhost")
        if not hostname.endswith(suffix):
            return None
        label = hostname[: -len(suffix)]
        return label if label and "." not in label else None


def from_own_origin(
    sec_fetch_site: str | None, origin: str | None, own_origins: Iterable[str]
) -> bool:
    """May a request authenticated by an ambient cookie be honoured?

    Browsers say where a request comes from in `Sec-Fetch-Site` (`same-origin`; `none`
    for what the user typed or bookmarked); older ones, and browsers talking to a plain
    http host that is not loopback, only in `Origin`. A request with neither is no
    cross-site browser request (those always carry one of them for writes and fetches).
    """
    if sec_fetch_site:
        return sec_fetch_site.strip().lower() in ("same-origin", "none")
    if origin:
        return origin.strip().rstrip("/").lower() in own_origins
    return True
