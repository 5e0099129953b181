"""An image's HEALTHCHECK, read from a container and, where the engine does not, run by us.

Docker runs a container's HEALTHCHECK itself and reports it in `State.Health`. Podman's
Docker-compatible API does not when there is no systemd to schedule the checks: the
status then stays `starting` forever with an empty log. For those containers the runtime
runs the same command with `exec` at the same interval and keeps the result here, with
Docker's rules: failures during the start period do not count, `retries` failures in a
row make the container unhealthy, one success makes it healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Docker's defaults for a HEALTHCHECK without options (durations in seconds).
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthConfig:
    """A HEALTHCHECK as Docker stores it in a container's `Config.Healthcheck`."""

    #: The command to exec (`CMD-SHELL x` becomes `/bin/sh -c x`).
    argv: list[str]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = 0.0


def _seconds(nanoseconds: Any, default: float) -> float:
    return nanoseconds / 1e9 if isinstance(nanoseconds, int) and nanoseconds > 0 else default


def health_config(config: dict[str, Any] | None) -> HealthConfig | None:
    """The health check of a container's `Config` (image's merged with run options), or
    None when it has none or it is disabled (`HEALTHCHECK NONE`)."""
    check = (config or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        argv = ["/bin/sh", "-c", " ".join(test[1:])]
    elif test[0] == "CMD":
        argv = list(test[1:])
    else:  # an old form without the leading keyword
        argv = list(test)
    if not argv:
        return None
    retries = check.get("Retries")
    return HealthConfig(
        argv=argv,
        interval=_seconds(check.get("Interval"), DEFAULT_INTERVAL),
        timeout=_seconds(check.get("Timeout"), DEFAULT_TIMEOUT),
        retries=retries if isinstance(retries, int) and retries > 0 else DEFAULT_RETRIES,
        start_period=_seconds(check.get("StartPeriod"), 0.0),
    )


#: Runs argv in the container (blocking); returns (exit code, output). Raises when the
#: container is gone.
ExecFunction = Callable[[list[str]], tuple[int, str]]


class HealthRunner:
    """Runs one container's health check in a background task, as Docker would."""

    def __init__(self, config: HealthConfig, run: ExecFunction) -> None:
        self.config = config
        self._run = run
        self.status = STARTING
        self.failing_streak = 0
        self.last_output = ""
        self._task: asyncio.Task[None] | None = None

    def start(self, running_for: float = 0.0) -> None:
        """Start checking; `running_for` is how long the container runs already."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._loop(running_for), name="servicelab-docker-health"
            )

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def check_once(self, elapsed: float) -> None:
        """Run the check once; `elapsed` is the time since the container started."""
        try:
            code, output = await asyncio.wait_for(
                asyncio.to_thread(self._run, self.config.argv), self.config.timeout
            )
        except TimeoutError:
            code, output = -1, f"health check timed out after {self.config.timeout:g} s"
        self.last_output = output.strip()[-4096:]
        if code == 0:
            self.status = HEALTHY
            self.failing_streak = 0
            return
        if elapsed < self.config.start_period and self.status == STARTING:
            return  # failures in the start period do not count
        self.failing_streak += 1
        if self.failing_streak >= self.config.retries:
            self.status = UNHEALTHY

    async def _loop(self, running_for: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time() - running_for
        while True:
            # Docker, too, waits one interval before the first check.
            await asyncio.sleep(self.config.interval)
            try:
                await self.check_once(loop.time() - began)
            except Exception:
                # The container is gone or stopped: nothing left to check.
                return


def code_service_healthcheck(
    image_config: dict[str, Any] | None, start_period: float, timeout: float, retries: int
) -> dict[str, Any] | None:
    """The runtime image's HEALTHCHECK with the spec's start period, timeout and retries
    (`containers.create`'s `healthcheck`), or None when the image has none. The command
    and the interval stay the image's: each check is an HTTP request the app may log."""
    image_check = (image_config or {}).get("Healthcheck") or {}
    if health_config(image_config) is None:
        return None
    return {
        "test": list(image_check["Test"]),
        "interval": int(image_check.get("Interval") or DEFAULT_INTERVAL * 1e9),
        "timeout": int(timeout * 1e9),
        "retries": retries,
        "start_period": int(start_period * 1e9),
    }
