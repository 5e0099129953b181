"""Service ports that only the lab reaches: one packet-filter rule for the whole machine.

Sandboxed services share the host's network (the lab's proxy reaches them on loopback,
as fast as before, and they reach the internet and the lab's API), so what keeps one
service from calling another's port directly is the kernel's packet filter:

    iptables -A SERVICELAB-SANDBOX -o lo -p tcp --dport 20000:29999
             -m owner --uid-owner 1900000000-1900999999 -m conntrack --ctstate NEW -j REJECT

reached from OUTPUT for the new connections of sandbox uids only (`jump()`), so that the
packets of established connections (all the proxy's traffic) never walk the chain.

Local services listen on ports from `SERVICE_PORTS` only, and a new connection to one of
them from any sandbox uid is refused; connections from the lab (another uid) pass, and so
do a service's answers (they are not NEW). The rule is the same for every lab on the
machine, so labs add it idempotently and never remove it. IPv6 gets the same rule.

A service may reach its own ports (apps such as Gradio call themselves at start): one
ACCEPT rule per port and uid, put before the REJECT when an instance starts and deleted
when the lab stops it. A port's earlier ACCEPT rules are deleted first, so a rule left by
an instance that died with its supervisor never opens a port that now belongs to another
service.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from servicelab.runtimes.sandbox_ids import UID_BASE, UID_LAST

#: Ports local services listen on (below Linux's ephemeral range, 32768 and up).
SERVICE_PORTS = (20000, 29999)
CHAIN = "SERVICELAB-SANDBOX"


def rule() -> list[str]:
    return [
        "-o",
        "lo",
        "-p",
        "tcp",
        "--dport",
        f"{SERVICE_PORTS[0]}:{SERVICE_PORTS[1]}",
        "-m",
        "owner",
        "--uid-owner",
        f"{UID_BASE}-{UID_LAST}",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]


def ensure_port_rule() -> str | None:
    """Install the rule (idempotent); None when done, else why it could not be."""
    tools = [t for t in ("iptables", "ip6tables") if shutil.which(t)]
    if "iptables" not in tools:
        return "iptables is not installed"
    for tool in tools:
        problem = _ensure(tool)
        if problem:
            return problem
    return None


def _ensure(tool: str) -> str | None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(tool, *args)

    if run("-n", "-L", CHAIN).returncode != 0:
        created = run("-N", CHAIN)
        if created.returncode != 0 and run("-n", "-L", CHAIN).returncode != 0:
            return f"{tool} -N {CHAIN} failed: {created.stderr.strip()}"
    if run("-C", CHAIN, *rule()).returncode != 0:
        added = run("-A", CHAIN, *rule())
        if added.returncode != 0:
            return f"{tool}: adding the port rule failed: {added.stderr.strip()}"
    if run("-C", "OUTPUT", *jump()).returncode != 0:
        added = run("-I", "OUTPUT", "1", *jump())
        if added.returncode != 0:
            return f"{tool}: jumping from OUTPUT failed: {added.stderr.strip()}"
    # Labs before this one jumped for every packet: remove that jump (it stays removed
    # once every lab on the machine is this version or later).
    while run("-C", "OUTPUT", "-j", CHAIN).returncode == 0:
        if run("-D", "OUTPUT", "-j", CHAIN).returncode != 0:
            break
    return None


def jump() -> list[str]:
    """From OUTPUT into the chain: only a sandboxed service's new connections.

    Every rule of the chain is about those (the REJECT and the ACCEPTs all match a sandbox
    uid, and the REJECT new connections only), so this decides the same as a jump for
    every packet. But every packet on the machine passes OUTPUT, loopback included, and
    the chain grows by a rule per service start: jumping for each packet made every
    request through the proxy (and to anything else on 127.0.0.1) walk hundreds of rules;
    a third of an nginx worker's time went there with ~800.
    """
    return [
        *("-m", "conntrack", "--ctstate", "NEW"),
        *("-m", "owner", "--uid-owner", f"{UID_BASE}-{UID_LAST}", "-j", CHAIN),
    ]


def own_port_rule(uid: int, port: int) -> list[str]:
    return [
        *("-o", "lo", "-p", "tcp", "-m", "tcp", "--dport", str(port)),
        *("-m", "owner", "--uid-owner", str(uid), "-j", "ACCEPT"),
    ]


def allow_own_ports(uid: int, ports: Iterable[int]) -> None:
    """Let the service of `uid` reach `ports`, which are its own from now on."""
    _drop_accepts(ports, uid=None, then_allow=uid)


def forget_own_ports(uid: int, ports: Iterable[int]) -> None:
    """An instance of the service of `uid` ended: its ports' ACCEPT rules go, so that the
    chain holds the rules of running instances only (a rule another uid has for one of
    these ports since stays)."""
    _drop_accepts(ports, uid=uid, then_allow=None)


def _drop_accepts(ports: Iterable[int], *, uid: int | None, then_allow: int | None) -> None:
    """Delete the ACCEPT rules of `ports` (of `uid` only, or of any uid when None), then
    put one for `then_allow` first in the chain."""
    ports = list(ports)
    owner = f"--uid-owner {uid} " if uid is not None else ""
    for tool in (t for t in ("iptables", "ip6tables") if shutil.which(t)):
        listed = _run(tool, "-S", CHAIN).stdout.splitlines()
        for port in ports:
            for line in listed:
                words = line.split()
                ours = words[:2] == ["-A", CHAIN] and words[-2:] == ["-j", "ACCEPT"]
                if ours and f"--dport {port} " in f"{line} " and owner in f"{line} ":
                    _run(tool, "-D", *words[1:])
            if then_allow is not None:
                _run(tool, "-I", CHAIN, "1", *own_port_rule(then_allow, port))


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-w", "10", *args], capture_output=True, text=True, check=False, timeout=30
    )
