"""servicelab's ProxyApp alone, for the benchmark: one uvicorn process (uvloop, httptools)
routing /api/projects/bench/services/up/80/ to the upstream (host:port) given on the
command line.

    python bench/proxy/serve.py UPSTREAM_PORT TOKEN [WORKERS]

Prints `LISTENING <port>` once its socket listens. With WORKERS > 1, that many processes
share the port with SO_REUSEPORT, as `servicelab serve --workers N` does.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

# Appended, not first: with PYTHONPATH naming another checkout (bench/proxy/compare.py),
# that checkout's servicelab is the one measured.
sys.path.append(str(Path(__file__).resolve().parents[2]))

import uvicorn  # noqa: E402

from servicelab.proxy import (  # noqa: E402
    AuthError,
    Principal,
    ProxyApp,
    ProxySettings,
    RouteError,
    Upstream,
)
from servicelab.runtimes.base import Address  # noqa: E402


class OneRoute:
    def __init__(self, upstream: str) -> None:
        host, _, port_text = upstream.rpartition(":")
        self.upstream = Upstream(Address(host, int(port_text)), strip_prefix=True)

    async def resolve(self, project: str, service: str, port: int) -> Upstream:
        if (project, service, port) != ("bench", "up", 80):
            raise RouteError(404, "unknown service")
        return self.upstream


class OneToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def authorize(self, token: str | None, project: str) -> Principal:
        if token != self.token:
            raise AuthError(401, "bad token")
        return Principal("bench", project)


async def not_found(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    upstream, token = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if workers > 1:
        run_workers(workers)
        return
    if len(sys.argv) > 4:  # a worker: the port given, shared with the other workers
        from servicelab.cli.workers import reuse_port_socket

        sock = reuse_port_socket("127.0.0.1", int(sys.argv[4]))
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
    app = ProxyApp(not_found, OneRoute(upstream), OneToken(token), ProxySettings())
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        backlog=2048,
    )
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(count: int) -> None:
    """`count` workers on one port; this process only waits for them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, sys.argv[1], sys.argv[2], "1", str(port)],
            stdout=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()  # LISTENING
    print(f"LISTENING {port}", flush=True)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            child.terminate()
            child.wait()


if __name__ == "__main__":
    main()
