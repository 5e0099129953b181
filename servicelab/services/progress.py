"""Progress of long steps (image pulls, installs) shown as the service's reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from servicelab.runtimes.base import ProgressCallback

from .store import ServiceRow, ServiceStore

#: Progress is written to the service's reason at most this often.
PROGRESS_INTERVAL = 0.5


@contextlib.asynccontextmanager
async def reporting(
    store: ServiceStore, row: ServiceRow, also: ProgressCallback | None, prefix: str = ""
) -> AsyncIterator[ProgressCallback]:
    """A progress callback that shows the latest line as the service's reason.

    Runtimes call it from worker threads and many times a second: lines are handed to the
    event loop and written at most every PROGRESS_INTERVAL seconds."""
    loop = asyncio.get_running_loop()
    latest: list[str] = []
    done = asyncio.Event()
    before = row.reason

    def report(line: str) -> None:
        if also is not None:
            also(line)
        loop.call_soon_threadsafe(latest.append, prefix + line)

    async def write() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), PROGRESS_INTERVAL)
            if latest and not done.is_set():
                line = latest[-1]
                latest.clear()
                await store.save(row, reason=line)

    writer = asyncio.create_task(write())
    try:
        yield report
    finally:
        done.set()
        await writer
        if row.reason != before:
            await store.save(row, reason=before)  # the caller says what comes next
