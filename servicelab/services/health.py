"""The health prober: HTTP checks of services whose runtime has no health check of its own.

It only ever calls the service's own address (from the runtime) with the spec's path: a
path that would name another host (`@host:port/x`, `//host/x`, `http://...`) is refused
by `spec.check_health_path` at deploy, and here again for rows stored before that rule.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from servicelab.runtimes.base import Address, Handle, Runtime
from servicelab.spec import InvalidSpec, Phase, ServiceSpec, check_health_path

#: How often a starting service is probed, so that "healthy" is seen quickly.
STARTING_PROBE_INTERVAL = 0.1


def probe_url(address: Address, path: str) -> httpx.URL | None:
    """`path` on `address`, or None when it would lead anywhere else."""
    try:
        check_health_path(path)
    except InvalidSpec:
        return None
    url = httpx.URL(address.url + path)
    if url.host != address.host.strip("[]") or url.port != address.port or url.userinfo:
        return None
    return url


class Prober:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=5.0, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def probe(self, handle: Handle, spec: ServiceSpec) -> tuple[bool, str | None]:
        """(healthy, why not). A status below 500 counts as healthy (ML Lab services
        answered their root with redirects and 401s)."""
        port = spec.health.port or spec.connection_port or (spec.ports[0] if spec.ports else None)
        path = spec.health.path
        if port is None or path is None:
            return True, None
        address = await self.runtime.address(handle, port)
        if address is None:
            return False, f"port {port} is not reachable"
        url = probe_url(address, path)
        if url is None:
            return False, f"health-check path {path!r} is not a path on the service"
        if self._http is None:
            await self.start()
        assert self._http is not None
        try:
            response = await self._http.get(url, timeout=spec.health.timeout)
        except httpx.HTTPError as exc:
            return False, f"GET {path} on port {port}: {type(exc).__name__}"
        if response.status_code >= 500:
            return False, f"GET {path} on port {port} answered {response.status_code}"
        return True, None

    async def wait_healthy(self, handle: Handle, spec: ServiceSpec) -> tuple[bool, str | None]:
        """Poll a new instance until healthy, failed, or its start period is over."""
        deadline = time.monotonic() + spec.health.start_period
        detail: str | None = "it did not start"
        while time.monotonic() < deadline:
            status = await self.runtime.status(handle)
            if status.phase in (Phase.FAILED, Phase.STOPPED):
                return False, status.reason
            if status.healthy is None and status.phase is Phase.RUNNING:
                ok, detail = await self.probe(handle, spec)
            else:
                ok, detail = bool(status.healthy), status.reason
            if ok:
                return True, None
            await asyncio.sleep(STARTING_PROBE_INTERVAL)
        return False, f"not healthy after {spec.health.start_period:.0f} s ({detail})"
