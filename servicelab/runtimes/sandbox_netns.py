"""A network of its own for one sandbox: a veth pair, an address, and the rules of egress.

    python -I -S sandbox_netns.py HOST_NS_FD CONFIG_JSON

The supervisor of a sandboxed instance moves itself into a new network namespace and
runs this (as root, with its fixed environment) in it, with a descriptor of the host's
namespace, before it starts any step: no code of the service runs before its network is
what this sets up. The namespace lives as long as the supervisor or a sandbox of its own.
It prints `{"interface", "address"}` and exits 0, or prints why and exits 1.

The namespace, seen from inside:

- `lo`, the service's own loopback (an app that calls itself at start still works);
- `eth0`, with one address of the lab's service network (`10.213.0.0/16` by default)
  and a route to the gateway (the network's first address) that every namespace shares;
- TCP that arrives on `eth0` is sent on to 127.0.0.1 inside (DNAT), so that a service
  that listens on loopback is reached as well as one that listens on every address;
- new connections may leave only to the lab's API (its port on the gateway, or where
  LAB_ENDPOINT names it), the name servers (port 53), what the operator allows, and
  (egress `internet`) public addresses: never to the gateway's other ports, loopback of
  the host, private, shared, link-local, multicast or reserved ranges, or the networks
  of the host's own uplink;
- no IPv6 beyond its own loopback: no link-local address on either end of the pair.

The rules live in the service's own namespace, which it cannot change (it has no
capability there), and die with it: a stopped or killed sandbox leaves no rule,
namespace or interface behind (the veth pair goes with its namespace). The host's side
of the network (forwarding, the gateway's DNAT to the lab, masquerading) is a fixed set
of rules that `sandbox_net.ensure_host_rules` installs once per machine.

Standard library only, and run by path: the supervisor cannot import the lab's package.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import random
import subprocess
import sys
from typing import Any

#: Host interfaces are named `slv<N>`: the name is the claim on address N of the network.
INTERFACE_PREFIX = "slv"
CLONE_NEWNET = 0x40000000


def _run(argv: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}: {(done.stderr or done.stdout).strip()}")


def _claim(pid: int, network: ipaddress.IPv4Network) -> tuple[str, ipaddress.IPv4Address]:
    """In the host's namespace: the veth pair, its `eth0` end in the namespace of `pid`."""
    # The host-side name claims an address: atomic, since a name in use makes `ip link
    # add` fail, and another is tried.
    count = network.num_addresses
    for index in random.sample(range(2, count - 1), min(64, count - 3)):
        name = f"{INTERFACE_PREFIX}{index}"
        done = subprocess.run(
            ["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            return name, network[index]
        if "File exists" not in done.stderr:
            raise RuntimeError(f"ip link add: {done.stderr.strip()}")
    raise RuntimeError(f"no free address in {network} for the service's network")


def _write(path: str, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:  # a kernel without IPv6 has nothing to turn off
            raise


def _enter(fd: int) -> None:
    """Move this process into the network namespace of `fd` (os.setns is 3.12+)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def rules(config: dict[str, Any]) -> str:
    """The namespace's iptables-restore input (see the module's docstring)."""
    gateway = config["gateway"]
    reject = "-j REJECT --reject-with icmp-net-prohibited"
    out = [
        "-A OUTPUT -o lo -j ACCEPT",
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]
    for address, port in config.get("lab", []):  # the lab's API, where it is reached
        out.append(f"-A OUTPUT -d {address}/32 -p tcp --dport {int(port)} -j ACCEPT")
    for server in config.get("nameservers", []):
        out += [
            f"-A OUTPUT -d {server}/32 -p {proto} --dport 53 -j ACCEPT" for proto in ("udp", "tcp")
        ]
    # Before what an operator allows: the host sends every port of the gateway on to its
    # loopback, so no allowed range may open more of it than the lab's port.
    out.append(f"-A OUTPUT -d {gateway}/32 {reject}")
    for allowed in config.get("allow", []):
        port = f" -p tcp --dport {int(allowed['port'])}" if allowed.get("port") else ""
        out.append(f"-A OUTPUT -d {allowed['cidr']}{port} -j ACCEPT")
    if config.get("internet", True):
        out += [f"-A OUTPUT -d {cidr} {reject}" for cidr in config["blocked"]]
    else:
        out.append(f"-A OUTPUT {reject}")
    return "\n".join(
        [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            "-A PREROUTING -i eth0 -p tcp -j DNAT --to-destination 127.0.0.1",
            "COMMIT",
            "*filter",
            ":INPUT DROP [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A INPUT -i eth0 -s {gateway}/32 -p tcp -j ACCEPT",
            *out,
            "COMMIT",
            "",
        ]
    )


def set_up(host_ns: int, config: dict[str, Any]) -> dict[str, str]:
    """From the service's namespace (the supervisor's, inherited), given the host's."""
    network = ipaddress.ip_network(config["network"])
    assert isinstance(network, ipaddress.IPv4Network)
    gateway = config["gateway"]
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    _enter(host_ns)
    name, address = _claim(os.getppid(), network)
    # IPv4 only: no link-local IPv6 address on either end, through which the service
    # would reach the host's services that listen on `[::]`.
    _write(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1", missing_ok=True)
    host_side = f"address add {gateway}/32 dev {name}\nlink set {name} up\n"
    host_side += f"route add {address}/32 dev {name} src {gateway}\n"
    _run(["ip", "-batch", "-"], host_side)
    # The gateway's DNAT sends the lab's port on to 127.0.0.1 (sandbox_net's rule).
    _write(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
    _enter(own)
    _write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1", missing_ok=True)
    _write("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1")
    inside = "link set lo up\nlink set eth0 up\n"
    inside += f"address add {address}/32 dev eth0\nroute add {gateway}/32 dev eth0 scope link\n"
    inside += f"route add default via {gateway} dev eth0\n"
    _run(["ip", "-batch", "-"], inside)
    _run(["iptables-restore", "-w", "10"], rules(config))
    return {"interface": name, "address": str(address)}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: sandbox_netns.py HOST_NS_FD CONFIG_JSON", file=sys.stderr)
        return 2
    try:
        print(json.dumps(set_up(int(argv[0]), json.loads(argv[1]))))
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        print(f"the service's network could not be set up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
