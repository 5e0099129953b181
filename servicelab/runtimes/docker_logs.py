"""A container's output, oldest first, for the Docker runtime's `logs`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import docker.errors
import requests.exceptions

from servicelab.runtimes.base import RuntimeUnavailable
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_rules import timestamp
from servicelab.runtimes.docker_stream import iterate_in_thread, split_lines


async def container_logs(
    engine: DockerEngine,
    container_id: str,
    *,
    tail: int | None = None,
    since: datetime | None = None,
    follow: bool = False,
) -> AsyncIterator[str]:
    if tail == 0 and not follow:
        return
    options: dict[str, Any] = {
        "follow": follow,
        "tail": "all" if tail is None else max(0, int(tail)),
    }
    since_ts = timestamp(since) if since is not None else None
    if tail == 0 and follow:
        # "Only new lines" as a time, not as tail=0: a line written after this call
        # but before the engine opened the stream would otherwise be lost.
        options["tail"] = "all"
        since_ts = max(since_ts or 0.0, time.time())
    if since_ts is not None:
        # The SDK ignores a `since` of 0 or less; just after the epoch means all.
        options["since"] = max(since_ts, 1e-6)
    if not (tail and await engine.is_podman()):
        async for line in _lines(engine, container_id, options):
            yield line
        return
    # Podman 4's `tail` loses, joins and invents lines (k8s-file log driver), so count
    # lines here instead: the last `tail` of everything there is now, then, when
    # following, whatever comes after them.
    options["tail"] = "all"
    if not follow:
        last: deque[str] = deque(maxlen=tail)
        async for line in _lines(engine, container_id, options):
            last.append(line)
        for line in last:
            yield line
        return
    count = 0
    async for _ in _lines(engine, container_id, {**options, "follow": False}):
        count += 1
    skip = max(0, count - tail)
    async for line in _lines(engine, container_id, options):
        if skip:
            skip -= 1
            continue
        yield line


async def _lines(
    engine: DockerEngine, container_id: str, options: dict[str, Any]
) -> AsyncIterator[str]:
    client = await engine.client()

    def open_stream() -> Any:
        return client.api.logs(container_id, stdout=True, stderr=True, stream=True, **options)

    try:
        async for line in iterate_in_thread(open_stream, split_lines):
            yield line
    except docker.errors.NotFound:
        return  # a vanished container has no logs left
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc
