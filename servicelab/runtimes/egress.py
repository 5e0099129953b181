"""Where a service's own connections may go: one rule, read once, for every runtime.

`SERVICELAB_SERVICE_EGRESS` is a comma-separated list:

- `internet` (the default alone): public addresses, and the lab's own API;
- `none`: the lab's API only;
- beside either, what an operator allows on top: a CIDR (`10.1.2.0/24`), an address
  (`10.1.2.3`) or an address and TCP port (`10.1.2.3:5432`, `[fd00::5]:5432`), such as a
  shared database in a private range.

Never reachable unless allowed that way: the host's loopback and its other ports,
private ranges (10/8, 172.16/12, 192.168/16), shared addresses (100.64/10), link-local
(169.254/16: the cloud metadata address), multicast and reserved ranges; and for IPv6
fc00::/7, fe80::/10. Each runtime turns this into its own rules (`sandbox_netns` for the
local sandbox).
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

from servicelab.spec import is_port

#: Destinations no service reaches unless an operator allows them.
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
BLOCKED_V6 = ("::1/128", "::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8")


@dataclass(frozen=True)
class Allowed:
    cidr: str
    port: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"cidr": self.cidr, "port": self.port}


@dataclass(frozen=True)
class Egress:
    internet: bool = True
    allow: tuple[Allowed, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Egress:
        """Raise ValueError with what to write instead."""
        words = [w.strip() for w in text.split(",") if w.strip()] or ["internet"]
        modes = {w for w in words if w in ("internet", "none")}
        if len(modes) > 1:
            raise ValueError("SERVICELAB_SERVICE_EGRESS: give `internet` or `none`, not both.")
        return cls(
            internet="none" not in modes,
            allow=tuple(_allowed(w) for w in words if w not in ("internet", "none")),
        )


def _allowed(word: str) -> Allowed:
    host, port = word, None
    if word.startswith("["):  # [v6]:port
        host, _, rest = word[1:].partition("]")
        port = _port(word, rest.removeprefix(":")) if rest else None
    elif word.count(":") == 1:  # v4:port
        host, _, rest = word.partition(":")
        port = _port(word, rest)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise ValueError(
            f"SERVICELAB_SERVICE_EGRESS: {word!r} is not an address, a CIDR or address:port "
            "(names are not resolved: give the address, e.g. 10.1.2.3:5432)."
        ) from None
    return Allowed(str(network), port)


def _port(word: str, text: str) -> int:
    if not is_port(text):
        raise ValueError(f"SERVICELAB_SERVICE_EGRESS: {word!r} has no valid port.")
    return int(text)


def lab_targets(endpoint: str) -> list[tuple[str, int]]:
    """Where a service reaches the lab's API: the (IPv4 address, port) pairs of
    LAB_ENDPOINT, which may name the lab publicly (a front proxy, a load balancer)."""
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({(str(info[4][0]), port) for info in found})


def connected_networks() -> list[tuple[str, str]]:
    """The IPv4 networks the host is directly on, and their interfaces (the kernel's
    routes for its own addresses): the host's LAN may be in no private range, and no
    service may reach its neighbours. Each runtime leaves out its own networks."""
    done = subprocess.run(
        ["ip", "-4", "route", "show", "scope", "link", "proto", "kernel"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    networks = []
    for line in done.stdout.splitlines():
        words = line.split()
        if words and "/" in words[0] and "dev" in words:
            networks.append((words[0], words[words.index("dev") + 1]))
    return sorted(set(networks))
