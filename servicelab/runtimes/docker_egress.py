"""Where Docker services' own connections may go: the egress rule (`egress.py`) on the
engine's host, in Docker's own `DOCKER-USER` chain.

The lab names the bridge of each project network `slb<hash>` (`bridge_name`), so that
one fixed set of rules covers every project network, made now or later:

    filter DOCKER-USER   -i slb+ -> SERVICELAB-EGRESS
    SERVICELAB-EGRESS    bridged (same network: the project's services, the lab's
                         container) RETURN; established RETURN; the lab's API and the
                         host's name servers (port 53) RETURN; allowed RETURN;
                         to another bridge REJECT; blocked ranges and the networks
                         the host is on (its LAN, whatever its range) REJECT
                         (egress `none`: everything) REJECT
    filter INPUT         -i slb+ -> SERVICELAB-DOCKER-IN: established ACCEPT; DNS and
                         the lab's port ACCEPT; else REJECT (the host's other ports)

`RETURN` hands the packet back to Docker's own rules. Where no `DOCKER-USER` chain
exists (Podman alone on the machine), the jump is from `FORWARD` itself, first.

The chains are rewritten by each lab at start, atomically enough for what they hold
(flush, then the rules), from its settings and the host's networks as they are then:
labs that share an engine share its egress rule. The lab's port rules are kept for
every lab of the machine that still listens, so that two labs on one host (on
different ports) do not shut each other out; the ports of labs gone are removed.

Applied only where the lab can: it runs as root on the engine's machine (a local
socket) with iptables. Elsewhere it says so once; the operator's firewall is then the
rule (docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from servicelab.runtimes.egress import BLOCKED_V4, Egress, connected_networks, lab_targets
from servicelab.runtimes.sandbox_net import nameservers

log = logging.getLogger("servicelab.runtimes")

BRIDGE_PREFIX = "slb"
EGRESS_CHAIN = "SERVICELAB-EGRESS"
INPUT_CHAIN = "SERVICELAB-DOCKER-IN"
REJECT = ["-j", "REJECT", "--reject-with", "icmp-net-prohibited"]


def bridge_name(network: str) -> str:
    """The Linux bridge of a project network: at most 15 characters, one prefix."""
    return BRIDGE_PREFIX + hashlib.sha256(network.encode()).hexdigest()[:12]


def egress_rules(
    egress: Egress, connected: list[str] | None = None, lab: list[tuple[str, int]] | None = None
) -> list[list[str]]:
    """The SERVICELAB-EGRESS chain; `connected`: the networks the host is directly on;
    `lab`: where services reach the lab's API (allowed whatever its range)."""
    bridged = ["-m", "physdev", "--physdev-is-bridged", "-j", "RETURN"]
    rules = [bridged, ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]]
    for address, lab_port in lab or []:
        rules.append(["-d", f"{address}/32", "-p", "tcp", "--dport", str(lab_port), "-j", "RETURN"])
    # Docker's embedded DNS asks the host's name servers from the container's network.
    for server in nameservers()[0]:
        for proto in ("udp", "tcp"):
            rules.append(["-d", f"{server}/32", "-p", proto, "--dport", "53", "-j", "RETURN"])
    for allowed in egress.allow:
        if ":" in allowed.cidr:
            continue  # IPv4 rules; project networks have no IPv6
        port = ["-p", "tcp", "--dport", str(allowed.port)] if allowed.port else []
        rules.append(["-d", allowed.cidr, *port, "-j", "RETURN"])
    rules.append(["-o", f"{BRIDGE_PREFIX}+", *REJECT])
    if egress.internet:
        rules += [["-d", cidr, *REJECT] for cidr in BLOCKED_V4]
        rules += [["-d", cidr, *REJECT] for cidr in connected or []]
    else:
        rules.append(REJECT)
    return rules


def local_engine() -> bool:
    """Whether the Docker engine runs on this machine (a Unix socket), where its rules
    can be the lab's."""
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def listening_ports() -> set[int]:
    """TCP ports something listens on, on this host (its /proc/net, both families)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def ensure_egress_rules(egress: Egress, lab_endpoint: str, local_engine: bool) -> None:
    """Install the rules (see the module's docstring); log once when they cannot be."""
    if not local_engine or os.geteuid() != 0 or not shutil.which("iptables"):
        log.warning(
            "Docker services' egress is not restricted by the lab (it needs root on the "
            "engine's machine and iptables): keep them off private ranges with a firewall"
        )
        return
    for chain in (EGRESS_CHAIN, INPUT_CHAIN):
        if _run("-n", "-L", chain).returncode != 0:
            _run("-N", chain)
    _run("-F", EGRESS_CHAIN)
    # A container's 127.0.0.1 is its own: a lab on the host's loopback is no target.
    lab = [(a, port) for a, port in lab_targets(lab_endpoint) if not a.startswith("127.")]
    connected = [net for net, device in connected_networks() if not device.startswith("slb")]
    for rule in egress_rules(egress, connected, lab):
        _run("-A", EGRESS_CHAIN, *rule)
    _lab_ports(lab[0][1] if lab else None)
    # Docker's chain for rules of its users; without Docker (Podman alone), FORWARD.
    forward = "DOCKER-USER" if _run("-n", "-L", "DOCKER-USER").returncode == 0 else "FORWARD"
    for builtin, chain in ((forward, EGRESS_CHAIN), ("INPUT", INPUT_CHAIN)):
        jump = [builtin, "-i", f"{BRIDGE_PREFIX}+", "-j", chain]
        if _run("-C", *jump).returncode != 0:
            done = _run("-I", jump[0], "1", *jump[1:])
            if done.returncode != 0:
                log.warning("Docker egress rule not installed: %s", done.stderr.strip())


def _lab_ports(lab_port: int | None) -> None:
    """The host's ports that services may reach: this lab's, and those of other labs
    that still listen; then REJECT."""
    listening = listening_ports()
    kept = {lab_port} if lab_port else set()
    for line in _run("-S", INPUT_CHAIN).stdout.splitlines():
        words = line.split()
        if "--dport" in words:
            port = int(words[words.index("--dport") + 1])
            if port in listening:
                kept.add(port)
    _run("-F", INPUT_CHAIN)
    _run("-A", INPUT_CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    for proto in ("udp", "tcp"):  # a network's DNS server on its gateway (Podman's)
        _run("-A", INPUT_CHAIN, "-p", proto, "--dport", "53", "-j", "ACCEPT")
    for port in sorted(p for p in kept if p is not None):
        _run("-A", INPUT_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT")
    _run("-A", INPUT_CHAIN, "-j", "REJECT")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, check=False, timeout=30
    )
