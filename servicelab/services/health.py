"""The health prober: checks of services whose runtime has no health check of its own.

A service is healthy when `GET <its health path>` gets a real answer below 400: a 404 on
the app's root (an app that misses its base-path setting) is not healthy, and the reason
names the status. With the route prefix kept, the probe asks for the prefixed path, as the
proxy would. Without a health path the check is a TCP connect (the service asked for it).

Probes must not bury the service's own log lines: once an HTTP probe has passed, the
checks until the next HTTP probe (`quiet_interval` later) are TCP connects, which apps do
not log; an app that answered badly is asked again no sooner than its health interval.

It only ever calls the service's own address (from the runtime) with the spec's path: a
path that would name another host (`@host:port/x`, `//host/x`, `http://...`) is refused
by `spec.check_health_path` at deploy, and here again for rows stored before that rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import httpx

from servicelab.runtimes.base import Address, Handle, Runtime
from servicelab.spec import InvalidSpec, Phase, ServiceSpec, check_health_path

#: How often a starting service is probed, so that "healthy" is seen quickly.
STARTING_PROBE_INTERVAL = 0.1
#: Seconds between two HTTP probes of a healthy service (TCP connects in between).
QUIET_HTTP_INTERVAL = 30.0
#: Statuses below this are healthy answers.
HEALTHY_BELOW = 400
#: Past this many remembered instances, forget the ones not probed for a while.
MAX_REMEMBERED = 4096


@dataclass
class LastHttpProbe:
    at: float
    healthy: bool
    detail: str | None


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
    def __init__(self, runtime: Runtime, *, quiet_interval: float = QUIET_HTTP_INTERVAL) -> None:
        self.runtime = runtime
        self.quiet_interval = quiet_interval
        self._http: httpx.AsyncClient | None = None
        self._last: dict[str, LastHttpProbe] = {}

    async def start(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=5.0,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": "servicelab-health-probe"},
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def probe(self, handle: Handle, spec: ServiceSpec) -> tuple[bool, str | None]:
        """(healthy, why not)."""
        port = spec.health_port
        if port is None:
            return True, None
        address = await self.runtime.address(handle, port)
        if address is None:
            return False, f"port {port} is not reachable"
        path = spec.probe_path(port)
        if path is None:
            return await tcp_check(address, port, spec.health.timeout)
        key = f"{spec.key} {json.dumps(handle, sort_keys=True, default=str)}"
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and last.healthy and now - last.at < self.quiet_interval:
            ok, detail = await tcp_check(address, port, spec.health.timeout)
            if not ok:
                del self._last[key]
            return ok, detail
        if last is not None and not last.healthy and now - last.at < spec.health.interval:
            return False, last.detail
        ok, detail, answered = await self._http_check(address, port, path, spec.health.timeout)
        if answered:
            self._remember(key, LastHttpProbe(now, ok, detail))
        else:
            self._last.pop(key, None)
        return ok, detail

    def _remember(self, key: str, probe: LastHttpProbe) -> None:
        if len(self._last) >= MAX_REMEMBERED:
            horizon = probe.at - max(self.quiet_interval, 60.0)
            self._last = {k: v for k, v in self._last.items() if v.at > horizon}
        self._last[key] = probe

    async def _http_check(
        self, address: Address, port: int, path: str, timeout: float
    ) -> tuple[bool, str | None, bool]:
        """(healthy, why not, whether the app answered at all)."""
        url = probe_url(address, path)
        if url is None:
            return False, f"health-check path {path!r} is not a path on the service", False
        if self._http is None:
            await self.start()
        assert self._http is not None
        try:
            response = await self._http.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return False, f"GET {path} on port {port}: {type(exc).__name__}", False
        if response.status_code >= HEALTHY_BELOW:
            hint = ""
            if response.status_code == 404:
                hint = (
                    " (does the app serve this path? set its base path to $LAB_SERVICE_URL and"
                    " keep the prefix, or give a health path it answers)"
                )
            return False, f"GET {path} on port {port} answered {response.status_code}{hint}", True
        return True, None, True

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


async def tcp_check(address: Address, port: int, timeout: float) -> tuple[bool, str | None]:
    """Whether the port accepts a connection (the app logs nothing of it)."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host.strip("[]"), address.port), timeout
        )
    except (OSError, TimeoutError) as exc:
        return False, f"port {port} does not accept connections ({type(exc).__name__})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, None
