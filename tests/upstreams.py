"""Real servers for the proxy tests, each run as its own process on 127.0.0.1.

    python tests/upstreams.py upstream            # an aiohttp app: echo, SSE, WS, big bodies
    python tests/upstreams.py proxy CONFIG_JSON   # ProxyApp under uvicorn, dict resolver

Each prints `LISTENING <port>` once its socket listens (bound to port 0 first, so the
kernel queues connections from that moment on: a real readiness signal, no sleeping).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import WSMsgType, web  # noqa: E402

from servicelab.proxy import (  # noqa: E402
    AuthError,
    Principal,
    ProxyApp,
    ProxySettings,
    RouteError,
    Upstream,
    render_metrics,
)
from servicelab.runtimes.base import Address  # noqa: E402

#: A repeating pattern for big bodies: cheap to make, and its CRC catches any lost or
#: reordered byte.
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def announce(sock: socket.socket) -> None:
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)


# -- the upstream service ---------------------------------------------------------------


def upstream_app() -> web.Application:
    releases: dict[str, asyncio.Event] = {}
    closes: dict[str, int | None] = {}
    transports: set[Any] = set()

    def release_event(key: str) -> asyncio.Event:
        return releases.setdefault(key, asyncio.Event())

    async def echo(request: web.Request) -> web.StreamResponse:
        transports.add(request.transport)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers
                ],
                "body": body.decode("latin-1"),
            }
        )

    async def set_cookies(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="cookies")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
        response.headers.add("X-Repeated", "one")
        response.headers.add("X-Repeated", "two")
        return response

    async def redirect(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        own = f"http://127.0.0.1:{request.transport.get_extra_info('sockname')[1]}"  # type: ignore[union-attr]
        location = {
            "absolute": f"{own}/target?x=1",
            "path": "/target",
            "relative": "target",
            "foreign": "https://example.org/elsewhere",
            "prefixed": request.headers.get("X-Forwarded-Prefix", "") + "/target",
            "host": f"http://{request.host}/target",  # as FastAPI's slash redirect does
        }[kind]
        raise web.HTTPFound(location)

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text='<html><body><a href="other">other</a></body></html>', content_type="text/html"
        )

    async def sse(request: web.Request) -> web.StreamResponse:
        key = request.query["id"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        # Event 2 only exists once the client proves it has seen event 1.
        await release_event(key).wait()
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    async def release(request: web.Request) -> web.StreamResponse:
        release_event(request.query["id"]).set()
        return web.Response(text="released")

    async def slow(request: web.Request) -> web.StreamResponse:
        # The behaviour under test is an upstream that does not answer: waiting is the point.
        await asyncio.sleep(float(request.query.get("seconds", "30")))
        return web.Response(text="late")

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = size
        while left > 0:
            chunk = PATTERN[: min(left, len(PATTERN))]
            await response.write(chunk)
            left -= len(chunk)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.StreamResponse:
        crc, size = 0, 0
        async for chunk in request.content.iter_any():
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
        return web.json_response({"size": size, "crc": crc})

    async def ws(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"), max_msg_size=0)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await sock.close(code=int(msg.data[6:]), message=b"bye")
                    break
                if msg.data == "headers":
                    await sock.send_str(json.dumps(dict(request.headers)))
                    continue
                await sock.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def ws_close_code(request: web.Request) -> web.StreamResponse:
        # Reports the close code the client's close arrived with, on a second request.
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            pass
        closes["last"] = sock.close_code
        return sock

    async def last_close(request: web.Request) -> web.StreamResponse:
        return web.json_response({"code": closes.get("last")})

    async def status(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        response = web.Response(status=code, headers={"X-Status": str(code)})
        if request.query.get("close"):
            response.force_close()  # Connection: close, then the service hangs up
        return response

    async def hang_up_idle(request: web.Request) -> web.StreamResponse:
        # Closes the kept-alive connections earlier echo requests came on, as a service
        # does when its keep-alive timeout passes.
        for transport in transports:
            if transport is not request.transport and transport is not None:
                transport.close()
        transports.clear()
        return web.Response(text="closed")

    app = web.Application(client_max_size=0)
    app.router.add_get("/setcookies", set_cookies)
    app.router.add_get("/redirect/{kind}", redirect)
    app.router.add_get("/{prefix:.*}/redirect/{kind}", redirect)  # for strip_prefix off
    app.router.add_get("/page/", page)
    app.router.add_get("/sse", sse)
    app.router.add_get("/release", release)
    app.router.add_get("/slow", slow)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/ws", ws)
    app.router.add_get("/ws-close", ws_close_code)
    app.router.add_get("/last-close", last_close)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hang-up-idle", hang_up_idle)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def run_upstream() -> None:
    sock = listen()
    runner = web.AppRunner(upstream_app(), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    announce(sock)
    await asyncio.Event().wait()


# -- the proxy under test ---------------------------------------------------------------


class DictResolver:
    """Routes `project/service/port` to real upstream addresses."""

    def __init__(self, routes: dict[str, dict[str, Any]], starting: list[str]) -> None:
        self.routes = routes
        self.starting = set(starting)

    async def resolve(self, project: str, service: str, port: int) -> Upstream:
        key = f"{project}/{service}/{port}"
        if key in self.starting:
            raise RouteError(503, f"Service {service!r} is starting.", retry_after=5)
        route = self.routes.get(key)
        if route is None:
            raise RouteError(404, f"No service {service!r} with port {port} in {project!r}.")
        return Upstream(Address(route["host"], route["port"]), route.get("strip", True))


class DictAuthorizer:
    """Tokens -> (user or None, project)."""

    def __init__(self, tokens: dict[str, list[Any]]) -> None:
        self.tokens = tokens

    async def authorize(self, token: str | None, project: str) -> Principal:
        if token is None:
            raise AuthError(401, "A token is needed for this service.")
        entry = self.tokens.get(token)
        if entry is None:
            raise AuthError(401, "The token is not valid.")
        user, token_project = entry
        if token_project != project:
            raise AuthError(403, f"The token does not open project {project!r}.")
        # The token stands for its own id here: a test has no database of tokens.
        return Principal(user, project, token_id=token)

    async def authorize_parent(self, token_id: str, project: str) -> Principal:
        return await self.authorize(token_id, project)


async def inner_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Stands for the lab's own app: everything the proxy does not handle, and /metrics."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = render_metrics() if scope["path"] == "/metrics" else b"inner app"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_proxy(config: dict[str, Any]) -> ProxyApp:
    settings = ProxySettings(
        login_path=config.get("login_path", "/login"),
        allowed_origins=config.get("allowed_origins", []),
        read_timeout=config.get("read_timeout"),
        connect_timeout=config.get("connect_timeout", 5.0),
        trust_forwarded_headers=config.get("trust_forwarded_headers", False),
    )
    return ProxyApp(
        inner_app,
        DictResolver(config.get("routes", {}), config.get("starting", [])),
        DictAuthorizer(config.get("tokens", {})),
        settings,
    )


def run_proxy(config: dict[str, Any]) -> None:
    import uvicorn

    logging.basicConfig(stream=sys.stderr, format="%(name)s %(message)s")
    logging.getLogger("servicelab.access").setLevel(logging.INFO)
    sock = listen()
    server = uvicorn.Server(
        uvicorn.Config(
            build_proxy(config),
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            server_header=False,
            # ProxyApp decides itself whether to believe X-Forwarded-*.
            proxy_headers=False,
        )
    )
    announce(sock)
    server.run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        asyncio.run(run_upstream())
    else:
        run_proxy(json.loads(sys.argv[2]))
