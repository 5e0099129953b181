"""Issue 26's hardening gaps, proxy part: on both planes a client that sends a request's
headers slowly (a byte at a time, or not at all) loses its connection within a bound,
while normal requests are served; on the embedded plane the connections waiting for
headers are bounded in number; nginx's workers run as an unprivileged user.

The attacker's connections are raw sockets; the bound is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..labtools import PLANES, LabProcess, plane_lab, wait_until

#: The header deadline of these labs (seconds), and how long a connection may then still
#: be open: the lab looks once a second, the machine is busy.
HEADER_TIMEOUT = 2
GRACE = 20
TRICKLERS = 20
#: The most connections an embedded lab here lets wait for headers.
MAX_WAITING = 8


def headers_lab(factory: pytest.TempPathFactory, plane: str, **env: str) -> Iterator[LabProcess]:
    """A lab on `plane` with a short header deadline (unless `env` says otherwise), and
    a project."""
    env = {"SERVICELAB_HEADER_TIMEOUT": str(HEADER_TIMEOUT), **env}
    with plane_lab(factory, plane, "headers", **env) as started:
        with started.client() as api:
            assert api.post("/api/projects", json={"name": "hdr"}).status_code == 201
        yield started


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    yield from headers_lab(tmp_path_factory, "embedded")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    yield from headers_lab(tmp_path_factory, "nginx")


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    """An embedded lab whose bound, not its deadline (a minute), closes connections."""
    yield from headers_lab(
        tmp_path_factory,
        "embedded",
        SERVICELAB_HEADER_TIMEOUT="60",
        SERVICELAB_MAX_WAITING_CONNECTIONS=str(MAX_WAITING),
    )


@pytest.fixture(params=PLANES)
def lab(request: pytest.FixtureRequest) -> LabProcess:
    """Each plane's lab in turn."""
    started: LabProcess = request.getfixturevalue(request.param)
    return started


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the lab closed this connection (read without waiting)."""
    sock.settimeout(0)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def trickle(sockets: list[socket.socket], byte: bytes) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.send(byte)


def open_connection(lab: LabProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", lab.port), timeout=10)


def test_slow_headers_lose_their_connection_and_requests_are_still_served(
    lab: LabProcess,
) -> None:
    silent = open_connection(lab)
    slow = [open_connection(lab) for _ in range(TRICKLERS)]
    for sock in slow:
        sock.sendall(b"GET /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    # A kept-alive connection: one request served, then the next one's headers trickle
    # (each byte would restart a keep-alive timer).
    kept = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=10)
    kept.request("GET", "/api/projects", headers={"Authorization": f"Bearer {lab.admin_token}"})
    assert kept.getresponse().read()
    assert kept.sock is not None
    kept.sock.sendall(b"GET /api/projects HTTP/1.1\r\nX-Slow: ")
    attackers = [silent, *slow, kept.sock]
    deadline = time.monotonic() + HEADER_TIMEOUT + GRACE
    with lab.client() as api:
        while open_ones := [s for s in attackers if not closed_by_peer(s)]:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(open_ones)} of {len(attackers)} slow connections still open")
            trickle([*slow, kept.sock], b"a")
            assert api.get("/api/projects").status_code == 200  # served meanwhile
            time.sleep(0.3)  # the trickle's pace
    for sock in attackers:
        sock.close()


def test_connections_waiting_for_headers_are_bounded(bounded: LabProcess) -> None:
    """The embedded plane's bound (nginx holds idle connections cheaply, in C)."""
    idle = [open_connection(bounded) for _ in range(5 * MAX_WAITING)]
    # The longest waiting are closed down to the bound, without waiting for a deadline.
    wait_until(
        lambda: sum(not closed_by_peer(s) for s in idle) <= MAX_WAITING,
        timeout=GRACE,
        what=f"at most {MAX_WAITING} connections left waiting",
    )
    with bounded.client() as api:
        assert api.get("/api/projects").status_code == 200
    for sock in idle:
        sock.close()


def worker_uids(lab: LabProcess) -> dict[int, int]:
    """nginx's worker processes and their real uids, read from /proc."""
    master = int((lab.data_dir / "nginx" / "nginx.pid").read_text().split()[0])
    found = {}
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{child}/status").read_text()
            found[int(child)] = int(status.split("\nUid:")[1].split()[0])
    return found


def test_nginx_workers_are_not_root(nginx: LabProcess) -> None:
    uids = worker_uids(nginx)
    assert uids, "nginx has workers"
    if os.geteuid() == 0:
        assert 0 not in uids.values(), uids
    else:  # nginx cannot switch users: its workers are the lab's, who is not root either
        assert set(uids.values()) == {os.geteuid()}, uids
    # Everything still passes through them: the lab's socket, a streamed request body.
    body = os.urandom(2 * 2**20)
    with nginx.client() as api:
        r = api.post(
            "/api/projects/hdr/files/upload",
            params={"dataType": "models", "fileName": "big.bin"},
            files={"file": ("big.bin", body)},
        )
        assert r.status_code == 200, r.text
        key = r.json()["data"]
        assert api.get("/api/projects/hdr/files/download", params={"fileKey": key}).content == body
    # The lab trusts what arrives on its socket: no other user of the machine reaches it.
    conf = (nginx.data_dir / "nginx" / "nginx.conf").read_text()
    socket_path = Path(conf.split("upstream sl_lab { server unix:", 1)[1].split(";", 1)[0])
    folder = socket_path.parent.stat()
    assert folder.st_mode & 0o007 == 0 and folder.st_uid == os.geteuid(), oct(folder.st_mode)
