"""The host's side of the sandboxes' networks: a fixed set of rules, installed once.

Every sandboxed instance has a network namespace of its own, set up by `sandbox_netns`
(a veth pair `slv<N>` / `eth0`, an address of `SERVICELAB_SERVICE_NETWORK`, egress rules
inside). On the host, for every such interface alike:

    nat    PREROUTING   -i slv+ -d GATEWAY -p tcp -j DNAT --to-destination 127.0.0.1
    nat    POSTROUTING  -s NETWORK ! -o slv+ -j MASQUERADE
    filter INPUT        -i slv+ -> SERVICELAB-IN:  established, DNAT'ed (the lab's
                        port, as the namespace's own rules allow), else REJECT
    filter FORWARD      -> SERVICELAB-NET: slv to slv REJECT; from slv ACCEPT (the
                        namespace decided); to slv established only, else REJECT

So a service reaches the lab's API at the gateway (sent on to the lab on 127.0.0.1), the
internet through the host, and nothing of the host itself: not its loopback, not its
other addresses and ports. No service reaches another except through the lab's proxy,
and nothing on the network opens a connection to a service: only the host (the lab's
proxy and prober) does, through the route to the service's address. The rules do not
grow with services; the labs of a machine share them and never remove them.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from servicelab.runtimes.egress import BLOCKED_V4, Egress, connected_networks, lab_targets

#: Ports unsandboxed local services listen on, on the host (below Linux's ephemeral range).
SERVICE_PORTS = (20000, 29999)
SETUP_PATH = Path(__file__).with_name("sandbox_netns.py")
INPUT_CHAIN = "SERVICELAB-IN"
FORWARD_CHAIN = "SERVICELAB-NET"
#: The chain of the port rule that labs before the network namespaces installed.
LEGACY_CHAIN = "SERVICELAB-SANDBOX"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ServiceNetwork:
    """What every sandbox's network is made of, as the operator configured it."""

    network: str = "10.213.0.0/16"
    egress: Egress = Egress()

    @classmethod
    def parse(cls, network: str, egress: str) -> ServiceNetwork:
        """Raise ValueError naming the setting to fix."""
        try:
            parsed = ipaddress.ip_network(network)
        except ValueError:
            raise ValueError(
                f"SERVICELAB_SERVICE_NETWORK={network!r} is not an IPv4 network such as "
                "10.213.0.0/16."
            ) from None
        if not isinstance(parsed, ipaddress.IPv4Network) or parsed.prefixlen > 24:
            raise ValueError("SERVICELAB_SERVICE_NETWORK must be an IPv4 network of /24 or more.")
        return cls(str(parsed), Egress.parse(egress))

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.network)[1])

    def lab_endpoint(self, endpoint: str) -> str:
        """LAB_ENDPOINT as a sandboxed service reaches it: a lab on loopback is at the
        gateway; any other URL (a public name) is reached as it is."""
        parts = urlsplit(endpoint)
        if parts.hostname not in LOOPBACK_HOSTS or parts.port is None:
            return endpoint
        return urlunsplit(parts._replace(netloc=f"{self.gateway}:{parts.port}"))

    def instance_config(self, lab_endpoint: str | None) -> dict[str, Any]:
        """The `network` part of a supervisor's config (see sandbox_netns)."""
        lab = lab_targets(lab_endpoint or "")
        for address, port in lab:
            if address != self.gateway and address in host_addresses():
                allow_lab_on_host(address, port)
        return {
            "setup": str(SETUP_PATH),
            "network": self.network,
            "gateway": self.gateway,
            "lab": lab,
            "nameservers": nameservers()[0],
            "internet": self.egress.internet,
            "blocked": [
                *BLOCKED_V4,
                *(net for net, _ in connected_networks() if net != self.network),
            ],
            "allow": [a.to_dict() for a in self.egress.allow if ":" not in a.cidr],
        }


def _ip(*args: str) -> list[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    return done.stdout.splitlines()


def host_addresses() -> set[str]:
    return {line.split()[3].split("/")[0] for line in _ip("-4", "-o", "address", "show")}


_allowed_on_host: set[tuple[str, int]] = set()


def allow_lab_on_host(address: str, port: int) -> None:
    """Let services reach the lab's API at one of the host's own addresses (a front proxy
    there): one rule per address and port, not per service."""
    if (address, port) in _allowed_on_host:
        return
    rule = [INPUT_CHAIN, "-d", f"{address}/32", "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]
    if _run("-C", *rule).returncode != 0:
        _run("-I", INPUT_CHAIN, "1", *rule[1:])
    _allowed_on_host.add((address, port))


def nameservers() -> tuple[list[str], str]:
    """The IPv4 name servers a sandbox uses, and the resolv.conf that names them: the
    host's, unless it names a server on the host's loopback (systemd-resolved's stub),
    which no sandbox reaches; then the upstream servers behind it, as Docker does."""
    for path in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        servers = _read_nameservers(Path(path))
        if servers and not any(ipaddress.ip_address(s).is_loopback for s in servers):
            return [s for s in servers if ipaddress.ip_address(s).version == 4], path
    return [], "/etc/resolv.conf"


def _read_nameservers(path: Path) -> list[str]:
    servers = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(words[1].split("%")[0])))
            except ValueError:
                continue
    return servers


def host_rules(net: ServiceNetwork) -> list[tuple[str, list[str]]]:
    """(table, rule) pairs, each checked with -C and added when missing."""
    return [
        (
            "filter",
            [INPUT_CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ),
        ("filter", [INPUT_CHAIN, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]),
        ("filter", [INPUT_CHAIN, "-j", "REJECT"]),
        ("filter", [FORWARD_CHAIN, "-i", "slv+", "-o", "slv+", "-j", "REJECT"]),
        ("filter", [FORWARD_CHAIN, "-i", "slv+", "-j", "ACCEPT"]),
        (
            "filter",
            [
                FORWARD_CHAIN,
                "-o",
                "slv+",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        ),
        ("filter", [FORWARD_CHAIN, "-o", "slv+", "-j", "REJECT"]),
    ]


def jumps(net: ServiceNetwork) -> list[tuple[str, list[str]]]:
    """Rules in the built-in chains, put first so that no other rule decides before."""
    return [
        ("filter", ["INPUT", "-i", "slv+", "-j", INPUT_CHAIN]),
        ("filter", ["FORWARD", "-j", FORWARD_CHAIN]),
        (
            "nat",
            [
                "PREROUTING",
                "-i",
                "slv+",
                "-d",
                f"{net.gateway}/32",
                "-p",
                "tcp",
                "-j",
                "DNAT",
                "--to-destination",
                "127.0.0.1",
            ],
        ),
        ("nat", ["POSTROUTING", "-s", net.network, "!", "-o", "slv+", "-j", "MASQUERADE"]),
    ]


def ensure_host_rules(net: ServiceNetwork) -> str | None:
    """Install the host's rules (idempotent); None when done, else why not."""
    for tool in ("iptables", "ip", "nsenter", "iptables-restore"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup-sandbox.sh installs it)"
    try:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    except OSError as exc:
        return f"forwarding could not be turned on: {exc}"
    # Addresses of the network that no instance holds are unreachable at once, rather
    # than sent on to the host's default route (instances add their own /32 routes).
    route = ["ip", "route", "replace", "unreachable", net.network]
    done = subprocess.run(route, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        return f"{' '.join(route)}: {done.stderr.strip()}"
    for chain in (INPUT_CHAIN, FORWARD_CHAIN):
        if _run("-n", "-L", chain).returncode != 0:
            _run("-N", chain)
    for table, rule in host_rules(net):
        if _run("-t", table, "-C", *rule).returncode != 0:
            done = _run("-t", table, "-A", *rule)
            if done.returncode != 0:
                return f"iptables -A {' '.join(rule)}: {done.stderr.strip()}"
    for table, rule in jumps(net):
        if _run("-t", table, "-C", *rule).returncode != 0:
            done = _run("-t", table, "-I", rule[0], "1", *rule[1:])
            if done.returncode != 0:
                return f"iptables -I {' '.join(rule)}: {done.stderr.strip()}"
    _remove_legacy()
    return None


def _remove_legacy() -> None:
    """The port rule of labs before network namespaces (sandboxes shared the host's
    network): its jump and chain go, so that no rule per service start is left."""
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for line in _run("-S", "OUTPUT", tool=tool).stdout.splitlines():
            if line.startswith("-A OUTPUT") and line.endswith(f"-j {LEGACY_CHAIN}"):
                _run("-D", *line.split()[1:], tool=tool)
        if _run("-n", "-L", LEGACY_CHAIN, tool=tool).returncode == 0:
            _run("-F", LEGACY_CHAIN, tool=tool)
            _run("-X", LEGACY_CHAIN, tool=tool)


def _run(*args: str, tool: str = "iptables") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-w", "10", *args], capture_output=True, text=True, check=False, timeout=30
    )
