"""servicelab's ProxyApp alone, for the benchmark: one uvicorn process (uvloop, httptools)
routing /api/projects/bench/services/up/80/ to the upstream given on the command line.

    python bench/proxy/serve.py UPSTREAM_PORT TOKEN

Prints `LISTENING <port>` once its socket listens.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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
    def __init__(self, port: int) -> None:
        self.upstream = Upstream(Address("127.0.0.1", port), strip_prefix=True)

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
    upstream_port, token = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    app = ProxyApp(not_found, OneRoute(upstream_port), OneToken(token), ProxySettings())
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


if __name__ == "__main__":
    main()
