"""What the Docker runtime sees of a container: status, health, address.

Inspect data is cached for a moment (`address()` is called for each proxied request).
Images' HEALTHCHECKs are run here where the engine does not run them (Podman without
systemd), and once early while Docker waits for its first interval.
"""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import datetime
from typing import Any

import docker.errors

from servicelab.runtimes.base import Address, Handle, RuntimeStatus
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_health import (
    HEALTHY,
    STARTING,
    UNHEALTHY,
    HealthConfig,
    HealthRunner,
    health_config,
)
from servicelab.runtimes.docker_rules import exposed_ports, mib, parse_time
from servicelab.runtimes.failure import telling_line
from servicelab.spec import Phase

#: How long `address()` may reuse what it saw of a container: it is called for each
#: proxied request, and one inspect per request would make the engine the bottleneck.
ADDRESS_CACHE_SECONDS = 1.0
#: How often a starting container's HEALTHCHECK is run by us before the engine's first run.
EARLY_CHECK_INTERVAL = 0.5
#: How many stopped containers `status()` tells from vanished ones.
MAX_REMEMBERED_STOPS = 10_000
#: How many of an ended container's last log lines are searched for why it failed.
FAILURE_TAIL = 30


class ContainerStatus:
    def __init__(
        self,
        engine: DockerEngine,
        *,
        lab_in_container: bool,
        publish_host: str,
        run_health_checks: bool | None,
    ) -> None:
        """run_health_checks: True: run every HEALTHCHECK ourselves; False: never; None:
        only where the engine does not (Podman)."""
        self.engine = engine
        self.lab_in_container = lab_in_container
        self.publish_host = publish_host
        self.run_health_checks = run_health_checks
        #: container id -> (time of the last early check, whether it passed)
        self._early: dict[str, tuple[float, bool]] = {}
        self._health: dict[str, HealthRunner] = {}
        # Containers the runtime stopped and removed: their status is STOPPED, not
        # "vanished". Bounded, oldest forgotten first.
        self._stopped: dict[str, None] = {}
        self._inspect_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def stopping(self, container_id: str) -> None:
        """The runtime stops this container: from now on it is STOPPED, not vanished."""
        await self.forget(container_id)
        self._stopped[container_id] = None
        while len(self._stopped) > MAX_REMEMBERED_STOPS:
            del self._stopped[next(iter(self._stopped))]

    async def _failure_line(self, container_id: str) -> str:
        """The line of an ended container's last log lines that says why it failed."""
        client = await self.engine.client()
        try:
            raw = await self.engine.call(
                client.api.logs, container_id, stdout=True, stderr=True, tail=FAILURE_TAIL
            )
        except docker.errors.APIError:
            return ""
        return telling_line(raw.decode("utf-8", "replace").splitlines()) or ""

    async def close(self) -> None:
        for container_id in list(self._health):
            await self.forget(container_id)
        self._inspect_cache.clear()

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's inspect data, or None when it is gone."""
        client = await self.engine.client()
        try:
            attrs = await self.engine.call(client.api.inspect_container, container_id)
        except docker.errors.NotFound:
            attrs = None
        self._inspect_cache[container_id] = (time.monotonic(), attrs)
        return attrs

    async def status(self, handle: Handle) -> RuntimeStatus:
        attrs = await self.inspect(handle["container_id"])
        if attrs is None:
            await self.forget(handle["container_id"])
            if handle["container_id"] in self._stopped:
                return RuntimeStatus(phase=Phase.STOPPED, reason="stopped")
            return RuntimeStatus(phase=Phase.FAILED, reason="container vanished")
        state = attrs.get("State") or {}
        started_at = parse_time(state.get("StartedAt"))
        exit_code = state.get("ExitCode")
        error = (state.get("Error") or "").strip()
        extra = {
            "container_id": attrs["Id"],
            "container_name": attrs.get("Name", "").lstrip("/"),
            "state": state.get("Status"),
            "restart_count": attrs.get("RestartCount", 0),
        }
        status = state.get("Status")
        if status == "running" or state.get("Running"):
            if state.get("Paused"):
                return RuntimeStatus(
                    Phase.UNHEALTHY,
                    healthy=False,
                    reason="paused",
                    started_at=started_at,
                    extra=extra,
                )
            return await self._running_status(attrs, started_at, extra)
        if status in ("exited", "dead") or (status == "created" and error):
            await self.forget(attrs["Id"], keep_cache=True)
            oom = bool(state.get("OOMKilled"))
            if oom:
                limit = (attrs.get("HostConfig") or {}).get("Memory") or 0
                reason = "killed: out of memory" + (f" (limit {mib(limit)})" if limit else "")
            elif status == "created":
                reason = f"could not start: {error}"
            else:
                reason = f"exited with code {exit_code}"
                if not error and exit_code:
                    error = await self._failure_line(attrs["Id"])
                if error:
                    reason += f": {error}"
            return RuntimeStatus(
                Phase.FAILED,
                healthy=False,
                reason=reason,
                exit_code=exit_code,
                started_at=started_at,
                oom_killed=oom,
                extra=extra,
            )
        if status == "removing":
            return RuntimeStatus(Phase.STOPPED, extra=extra)
        # created (not started yet), restarting
        return RuntimeStatus(Phase.STARTING, reason=status, started_at=started_at, extra=extra)

    async def _running_status(
        self, attrs: dict[str, Any], started_at: datetime | None, extra: dict[str, Any]
    ) -> RuntimeStatus:
        config = health_config(attrs.get("Config"))
        if config is None:
            return RuntimeStatus(Phase.RUNNING, healthy=None, started_at=started_at, extra=extra)
        engine_health = (attrs.get("State") or {}).get("Health")
        runner = self._health.get(attrs["Id"])
        if runner is None and await self._run_health_ourselves(engine_health, config, started_at):
            runner = self._start_health_runner(attrs["Id"], config, started_at)
        # Docker runs the first check only after a whole interval (30 s by default); until
        # it has, run the image's check ourselves, as Docker 25's start interval does, so
        # that a service is healthy — and served — as soon as it is.
        awaiting_engine = runner is None and engine_health and not engine_health.get("Log")
        if awaiting_engine and await self._early_check(attrs["Id"], config):
            extra["health_checked_by"] = "servicelab"
            extra["health"] = HEALTHY
            return RuntimeStatus(Phase.RUNNING, healthy=True, started_at=started_at, extra=extra)
        if runner is not None:
            health, output = runner.status, runner.last_output
            extra["health_checked_by"] = "servicelab"
        else:
            engine_health = engine_health or {}
            health = engine_health.get("Status") or STARTING
            log = engine_health.get("Log") or []
            output = (log[-1].get("Output") or "").strip() if log else ""
            extra["health_checked_by"] = "engine"
        extra["health"] = health
        if health == HEALTHY:
            return RuntimeStatus(Phase.RUNNING, healthy=True, started_at=started_at, extra=extra)
        if health == UNHEALTHY:
            reason = "health check failed" + (f": {output}" if output else "")
            return RuntimeStatus(
                Phase.UNHEALTHY, healthy=False, reason=reason, started_at=started_at, extra=extra
            )
        return RuntimeStatus(Phase.STARTING, healthy=False, started_at=started_at, extra=extra)

    async def _run_health_ourselves(
        self,
        engine_health: dict[str, Any] | None,
        config: HealthConfig,
        started_at: datetime | None,
    ) -> bool:
        """Whether the engine leaves this container's HEALTHCHECK unrun."""
        if self.run_health_checks is not None:
            return self.run_health_checks
        if await self.engine.is_podman():
            return True
        if not engine_health:
            return True
        if engine_health.get("Log"):
            return False
        # Docker checks first after one interval; no result long after that means no one
        # is checking.
        running_for = _running_for(started_at)
        return running_for > config.start_period + 3 * config.interval + 5

    def _exec(self, container_id: str, argv: list[str]) -> tuple[int, str]:
        """Run `argv` in the container (blocking): its exit code and output."""
        api = self.engine.ready_client.api
        result = api.exec_create(container_id, argv, stdout=True, stderr=True)
        output = api.exec_start(result["Id"])
        code = api.exec_inspect(result["Id"]).get("ExitCode")
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else ""
        return (code if isinstance(code, int) else -1), text

    async def _early_check(self, container_id: str, config: HealthConfig) -> bool:
        """The image's HEALTHCHECK run once now (at most every EARLY_CHECK_INTERVAL s)."""
        last = self._early.get(container_id)
        now = time.monotonic()
        if last is not None and (last[1] or now - last[0] < EARLY_CHECK_INTERVAL):
            return last[1]
        try:
            code, _ = await asyncio.wait_for(
                asyncio.to_thread(self._exec, container_id, config.argv), config.timeout
            )
        except Exception:  # not up yet, exec refused, timed out: simply not healthy yet
            code = -1
        self._early[container_id] = (now, code == 0)
        return code == 0

    def _start_health_runner(
        self, container_id: str, config: HealthConfig, started_at: datetime | None
    ) -> HealthRunner:
        runner = HealthRunner(config, functools.partial(self._exec, container_id))
        self._health[container_id] = runner
        runner.start(_running_for(started_at))
        return runner

    async def forget(self, container_id: str, *, keep_cache: bool = False) -> None:
        self._early.pop(container_id, None)
        runner = self._health.pop(container_id, None)
        if runner is not None:
            await runner.close()
        if not keep_cache:
            self._inspect_cache.pop(container_id, None)

    async def address(self, handle: Handle, port: int) -> Address | None:
        container_id = handle["container_id"]
        cached = self._inspect_cache.get(container_id)
        if cached is not None and time.monotonic() - cached[0] < ADDRESS_CACHE_SECONDS:
            attrs = cached[1]
        else:
            attrs = await self.inspect(container_id)
        if attrs is None or not (attrs.get("State") or {}).get("Running"):
            return None
        if self.lab_in_container:
            known = set(exposed_ports(attrs.get("Config"))) | set(handle.get("exposed_ports") or [])
            known |= {int(p) for p in handle.get("ports") or {}}
            if port not in known:
                return None
            return Address(attrs.get("Name", "").lstrip("/"), port)
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp")
        if not bindings:
            return None
        host = self.publish_host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return Address(host, int(bindings[0]["HostPort"]))


def _running_for(started_at: datetime | None) -> float:
    if started_at is None:
        return 0.0
    return max(0.0, time.time() - started_at.timestamp())
