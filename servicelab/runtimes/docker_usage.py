"""CPU and memory of a container, from the engine's stats (for the service page's charts).

One stats call without streaming and with `one_shot` (the engine answers at once instead
of waiting a second for a second sample): the page polls every few seconds, and the
history (`usage.UsageHistory`) turns the CPU time into a rate itself. Memory is counted
as `docker stats` does: usage less the inactive page cache, which the kernel drops first.
"""

from __future__ import annotations

from typing import Any

import docker.errors

from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.usage import Usage


async def container_usage(engine: DockerEngine, container_id: str) -> Usage | None:
    """The container's usage now, or None when it is gone or not running."""
    client = await engine.client()
    try:
        stats = await engine.call(client.api.stats, container_id, stream=False, one_shot=True)
    except docker.errors.NotFound:
        return None
    return usage_from_stats(stats)


def usage_from_stats(stats: dict[str, Any]) -> Usage | None:
    """A `Usage` from one stats answer (Docker's cgroup v1 or v2 fields, or Podman's)."""
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    used = memory.get("usage")
    if not isinstance(cpu, int) or not isinstance(used, int):
        return None  # a stopped container: the engine has no figures
    details = memory.get("stats") or {}
    inactive = details.get("total_inactive_file", details.get("inactive_file", 0))
    resident = used - inactive if isinstance(inactive, int) and inactive < used else used
    return Usage(cpu_seconds=cpu / 1e9, memory_bytes=resident)
