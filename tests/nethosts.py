"""Hosts of the tests' own, in network namespaces they make: where a sandboxed service's
traffic may go in a test without leaving this machine (issue 27's rule).

A test host is a network namespace with one end of a veth pair, reached through a route
of the host's, so services reach it as they would reach any machine out there (through
the host, which masquerades). `listen()` makes a listening socket inside the namespace,
for a server the test runs in its own process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
#: TEST-NET-2 (RFC 5737): documentation addresses no real host has, and not one of the
#: ranges a service's egress refuses, so a service reaches them like a public server.
PUBLIC_LOOKING = ipaddress.ip_network("198.51.100.0/24")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class TestHost:
    namespace: str
    address: str

    def listen(self, port: int = 0) -> socket.socket:
        """A listening TCP socket on this host's address, inside its namespace (a
        thread's setns changes that thread only; the socket keeps its namespace)."""
        made: list[socket.socket | BaseException] = []

        def inside() -> None:
            try:
                fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.address, port))
                sock.listen(64)
                made.append(sock)
            except BaseException as exc:  # handed to the caller's thread
                made.append(exc)

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]


@contextlib.contextmanager
def far_host() -> Iterator[TestHost]:
    """A test host at a free address of TEST-NET-2, reached through a route as a host of
    the internet is (not on a network the host is directly on, which services may not
    reach); removed, namespace, veth and route, when the block ends."""
    index = 1 + secrets.randbelow(126)
    near, address = str(PUBLIC_LOOKING[2 * index]), str(PUBLIC_LOOKING[2 * index + 1])
    tag = secrets.token_hex(4)
    namespace, veth = f"slt-{tag}", f"slt{tag}"
    ip("netns", "add", namespace)
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("address", "add", f"{near}/32", "dev", veth)
        ip("link", "set", veth, "up")
        ip("route", "add", f"{address}/32", "dev", veth, "scope", "global", "src", near)
        ip("-n", namespace, "address", "add", f"{address}/32", "dev", "eth0")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "route", "add", f"{near}/32", "dev", "eth0")
        ip("-n", namespace, "route", "add", "default", "via", near)
        yield TestHost(namespace, address)
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
