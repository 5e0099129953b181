"""The memory runtime: services "run" inside the lab's own event loop, for tests.

Like httpx's `MockTransport`, it keeps the whole contract and none of the machinery:
an instance is a tiny HTTP server (`memory_http`) on a free loopback port, so the lab's
proxy and health prober reach it as they reach any service, and whatever the spec names
(code or image), it serves the routes of the tests' echo service (`echo_app`). Nothing
is installed, no process starts, and an instance lives as long as the event loop.

What a real backend keeps outside the lab (the data of each service, the instances a
restarted lab adopts) lives in a `MemoryState`: two runtimes given one state play a lab
and the same lab restarted (`MemoryRuntime(state=old.state)`).

Selected with `SERVICELAB_RUNTIME=memory` (entry point `memory`); never for real work.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from servicelab.runtimes.base import (
    DATA_DIR_ENV,
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeStatus,
    SpecError,
)
from servicelab.runtimes.memory_http import Request, Response, serve
from servicelab.spec import InvalidSpec, Phase, ServiceSpec, code_port

#: Poll interval of `logs(follow=True)`.
FOLLOW_INTERVAL = 0.02


@dataclass
class Instance:
    """One started instance: its servers, environment, log and how it ended."""

    id: str
    key: str
    env: dict[str, str]
    #: The service's ports -> the loopback ports its servers listen on.
    ports: dict[int, int] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    log: list[tuple[datetime, str]] = field(default_factory=list)
    phase: Phase = Phase.RUNNING
    exit_code: int | None = None
    reason: str | None = None

    def print(self, line: str) -> None:
        self.log.append((datetime.now(UTC), line))

    def end(self, phase: Phase, exit_code: int | None, reason: str | None = None) -> None:
        """Close its servers (the ports close) and record how it ended; once only."""
        if self.phase != Phase.RUNNING:
            return
        for server in self.servers:
            server.close()
        self.phase, self.exit_code, self.reason = phase, exit_code, reason

    def handle(self) -> Handle:
        return {"id": self.id, "key": self.key, "ports": {str(p): r for p, r in self.ports.items()}}


@dataclass
class MemoryState:
    """What outlives one runtime object: instances by id, and each service's /data."""

    instances: dict[str, Instance] = field(default_factory=dict)
    #: Service key -> file name -> content.
    data: dict[str, dict[str, bytes]] = field(default_factory=dict)


class MemoryRuntime(Runtime):
    """Services as in-process HTTP servers on loopback ports: a fake backend for tests."""

    name: ClassVar[str] = "memory"
    supports_images: ClassVar[bool] = True

    def __init__(self, state: MemoryState | None = None, host: str = "127.0.0.1") -> None:
        self.state = state or MemoryState()
        self.host = host

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        if bool(spec.image) == bool(spec.code):
            raise SpecError("A service needs either an image or code to run, and not both.")
        try:
            ports = list(spec.ports) or [code_port(spec.env)]
        except InvalidSpec as exc:
            raise SpecError(str(exc)) from None
        return replace(spec, ports=ports, connection_port=spec.connection_port or ports[0])

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        ports = list(dict.fromkeys([*spec.ports, code_port(spec.env | env)]))
        env = env | {"PORT": str(ports[-1]), DATA_DIR_ENV: f"memory://{spec.key}/data"}
        instance = Instance(secrets.token_hex(6), spec.key, env)
        for port in ports:
            server = await serve(lambda request: echo_app(self.state, instance, request))
            instance.servers.append(server)
            instance.ports[port] = server.sockets[0].getsockname()[1]
        instance.print(f"echo-service listening on {env['PORT']}")
        self.state.instances[instance.id] = instance
        return instance.handle()

    def _instance(self, handle: Handle) -> Instance | None:
        return self.state.instances.get(str(handle.get("id")))

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        instance = self._instance(handle)
        if instance is not None:
            instance.print("got SIGTERM, bye")
            instance.end(Phase.STOPPED, 0)

    async def status(self, handle: Handle) -> RuntimeStatus:
        instance = self._instance(handle)
        if instance is None:
            return RuntimeStatus(Phase.FAILED, reason="the instance is gone")
        return RuntimeStatus(
            instance.phase,
            reason=instance.reason,
            exit_code=instance.exit_code,
            started_at=instance.started_at,
        )

    async def address(self, handle: Handle, port: int) -> Address | None:
        instance = self._instance(handle)
        if instance is None or instance.phase != Phase.RUNNING or port not in instance.ports:
            return None
        return Address(self.host, instance.ports[port])

    async def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        instance = self._instance(handle)
        if instance is None:
            return
        lines = [line for stamp, line in instance.log if since is None or stamp >= since]
        for line in lines[-tail:] if tail else ([] if tail == 0 else lines):
            yield line
        seen = len(instance.log)
        while follow:
            ended = instance.phase != Phase.RUNNING  # before reading: its last lines too
            for _, line in instance.log[seen:]:
                yield line
            seen = len(instance.log)
            if ended:
                return
            await asyncio.sleep(FOLLOW_INTERVAL)

    async def adopt(self) -> list[AdoptedInstance]:
        running = [i for i in self.state.instances.values() if i.phase == Phase.RUNNING]
        return [AdoptedInstance(i.key, i.handle()) for i in running]

    async def delete_data(self, spec: ServiceSpec) -> None:
        for instance in list(self.state.instances.values()):
            if instance.key == spec.key:
                instance.end(Phase.STOPPED, 0)
        self.state.data.pop(spec.key, None)

    async def kept_data(self) -> list[str]:
        return sorted(self.state.data)


async def echo_app(state: MemoryState, instance: Instance, request: Request) -> Response:
    """The routes of tests/services/echo-service, which every runtime's tests use: `/`,
    `/env`, `/headers`, `/data` (GET, POST, PUT), `/log?n=N&text=T`, `/crash` (exit 3)."""
    url = urlsplit(request.path)
    response = _route(state, instance, request, url.path, parse_qs(url.query))
    instance.print(f"request {request.method} {request.path} -> {response.status}")
    return response


def _route(
    state: MemoryState,
    instance: Instance,
    request: Request,
    path: str,
    query: dict[str, list[str]],
) -> Response:
    if request.method in ("POST", "PUT"):
        if path != "/data":
            return Response(404, "not found")
        state.data.setdefault(instance.key, {})["value.txt"] = request.body
        return Response(200, "stored")
    if path == "/":
        return Response(200, "ok")
    if path == "/env":
        return Response(200, json.dumps(instance.env), "application/json")
    if path == "/headers":
        seen = {"path": request.path, "headers": [list(h) for h in request.headers]}
        return Response(200, json.dumps(seen), "application/json")
    if path == "/data":
        value = state.data.get(instance.key, {}).get("value.txt")
        return Response(404, "no value") if value is None else Response(200, value)
    if path == "/log":
        text = query.get("text", ["line"])[0]
        for i in range(int(query.get("n", ["1"])[0])):
            instance.print(f"{text} {i}")
        return Response(200, "logged")
    if path == "/crash":
        instance.print("crashing on request")
        return Response(
            200, "crashing", after=lambda: instance.end(Phase.FAILED, 3, "exited with code 3")
        )
    return Response(404, "not found")
