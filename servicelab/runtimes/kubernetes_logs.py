"""An instance's logs from the pod log API: every replica's lines, oldest first.

Lines are read with the kubelet's timestamps, so that `since` is exact (the API takes
whole seconds) and the lines of several replicas interleave in time order; the
timestamps are removed before users see the lines. `tail` is applied to the merged
lines; with `follow`, each pod's stream is read at once and the lines are passed on as
they come, until every stream ends (its pod stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from servicelab.runtimes.kubernetes_api import KubeApi
from servicelab.runtimes.kubernetes_status import parse_time

_END = object()


def split_timestamp(line: str) -> tuple[datetime | None, str]:
    """`2026-12-01T10:00:00.123456789Z text` -> (time, text); nanoseconds cut to micro."""
    stamp, sep, text = line.partition(" ")
    if not sep:
        return None, line
    head, dot, fraction = stamp.rstrip("Z").partition(".")
    when = parse_time(f"{head}.{fraction[:6].ljust(6, '0')}+00:00" if dot else f"{head}+00:00")
    return (when, text) if when else (None, line)


def since_seconds(since: datetime | None) -> int | None:
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max(1, math.ceil((datetime.now(UTC) - since).total_seconds()) + 1)


async def instance_logs(
    api: KubeApi,
    namespace: str,
    pods: list[str],
    *,
    tail: int | None = None,
    since: datetime | None = None,
    follow: bool = False,
) -> AsyncIterator[str]:
    seconds = since_seconds(since)

    def wanted(when: datetime | None) -> bool:
        return since is None or when is None or when >= since.replace(tzinfo=since.tzinfo or UTC)

    if not follow:
        lines: list[tuple[datetime, str]] = []
        for pod in pods:
            async for raw in api.log_lines(
                pod, namespace, tail=tail, since_seconds=seconds, follow=False
            ):
                when, text = split_timestamp(raw)
                if wanted(when):
                    lines.append((when or datetime.min.replace(tzinfo=UTC), text))
        lines.sort(key=lambda item: item[0])
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        for _, text in lines:
            yield text
        return

    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1000)

    async def pump(pod: str) -> None:
        try:
            async for raw in api.log_lines(
                pod, namespace, tail=tail, since_seconds=seconds, follow=True
            ):
                when, text = split_timestamp(raw)
                if wanted(when):
                    await queue.put(text)
        finally:
            await queue.put(_END)

    tasks = [asyncio.create_task(pump(pod)) for pod in pods]
    try:
        open_streams = len(tasks)
        while open_streams:
            item = await queue.get()
            if item is _END:
                open_streams -= 1
                continue
            assert isinstance(item, str)
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
