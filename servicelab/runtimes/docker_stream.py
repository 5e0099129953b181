"""Turn the Docker SDK's blocking byte streams into async iterators of text lines.

The SDK reads logs and pull progress from a socket in the calling thread. To keep the
event loop free, one worker thread reads the stream and hands each line to an asyncio
queue with `call_soon_threadsafe`; the consumer awaits the queue. When the consumer
stops early (a client closed its log view), `close` on the stream makes the blocked read
in the worker fail, so no thread is left behind waiting for output that may never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

#: Put in the queue by the worker when the stream ended; an exception object means the
#: stream failed with it.
_END = object()


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines from arbitrary byte chunks, without their newline (also `\\r\\n`).

    Docker frames output per write, not per line: one chunk may hold several lines or a
    part of one. A last line without newline is yielded when the stream ends.
    """
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", errors="replace")


async def iterate_in_thread(
    open_stream: Callable[[], Any],
    transform: Callable[[Any], Iterable[Any]] = lambda stream: stream,
    *,
    max_queued: int = 1000,
) -> AsyncIterator[Any]:
    """Yield the items of a blocking stream, read in a worker thread.

    `open_stream` runs in the worker and returns the SDK's stream (it may block, e.g. on
    an HTTP request); `transform` turns it into the items to yield (e.g. `split_lines`).
    Exceptions from either are raised in the consumer. The queue is bounded, so a slow
    consumer slows the reader down instead of buffering a chatty container's whole log.
    """
    loop = asyncio.get_running_loop()
    # Unbounded: `room` is the bound, and the end marker must always fit.
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stream_box: list[Any] = []
    stopped = threading.Event()
    # The worker waits on this before putting another item when the queue is full.
    room = threading.Semaphore(max_queued)

    def put(item: Any) -> None:
        # RuntimeError: the loop is closed, so nobody is left to read the item.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            stream = open_stream()
            stream_box.append(stream)
            if stopped.is_set():
                return
            for item in transform(stream):
                while not room.acquire(timeout=0.5):
                    if stopped.is_set():
                        return
                if stopped.is_set():
                    return
                put(item)
            put(_END)
        except BaseException as exc:  # handed to the consumer
            if not stopped.is_set():
                put(exc)
        finally:
            _close(stream_box)

    # A thread of its own, not the loop's default executor: a followed log may stay open
    # for days, and a few of them would otherwise starve every `asyncio.to_thread` call.
    finished = asyncio.Event()

    def run() -> None:
        try:
            work()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(finished.set)

    threading.Thread(target=run, name="servicelab-docker-stream", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item
    finally:
        stopped.set()
        # Wake the worker if it is blocked in a read; ignore errors of a closed stream.
        _close(stream_box)
        # Normally the worker ends at once; a read that `close` cannot interrupt ends on
        # its own later, and is not worth holding the consumer for.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=5)


def _close(stream_box: list[Any]) -> None:
    for stream in stream_box:
        with contextlib.suppress(Exception):  # closing a broken stream is best effort
            stream.close()
