"""How `servicelab serve` writes its log: the time formatted once a second, and the
access log's lines written in batches, not one write each.

The proxy logs one access line per request; written one by one, each costs a system call
and a flush. Like nginx's `access_log ... buffer=... flush=...`, the access handler keeps
its lines and writes them together once `MAX_LINES` wait or `MAX_DELAY` seconds after the
first, and at exit. A lab killed with SIGKILL loses at most that last second of access
lines (`servicelab.proxy.access_log` batches too); every other line is written at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TextIO

#: Lines kept before they are written.
MAX_LINES = 256
#: Seconds a line waits at most.
MAX_DELAY = 0.5


class SecondCachedFormatter(logging.Formatter):
    """`logging.Formatter` with its default time format, which formats each second's
    date and time once instead of for every line (`strftime` was a sixth of a line)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"  # as `default_msec_format` has it


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` that writes its lines in batches (see the module's docstring)."""

    def __init__(
        self, stream: TextIO, *, max_lines: int = MAX_LINES, max_delay: float = MAX_DELAY
    ) -> None:
        super().__init__(stream)
        self.max_lines = max_lines
        self.max_delay = max_delay
        self._lines: list[str] = []
        #: The loop that will call `flush` for the lines waiting (None: none is due).
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called by `handle()`, which holds the handler's lock.
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread to write later: now
            loop = None
        other_loop_due = self._flush_loop is not None and self._flush_loop is not loop
        if len(self._lines) >= self.max_lines or loop is None or other_loop_due:
            self._write()
        elif self._flush_loop is None:
            loop.call_later(self.max_delay, self.flush)
            self._flush_loop = loop

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # StreamHandler always has one
            self._write()
            super().flush()

    def close(self) -> None:
        self.flush()  # `logging.shutdown()` flushes first; a plain close must not lose lines
        super().close()

    def _write(self) -> None:
        # A flush already due stays due (it finds nothing, or the next lines): cancelling
        # it from another thread would not be safe.
        self._flush_loop = None
        if not self._lines:
            return
        text = "\n".join(self._lines) + self.terminator
        self._lines = []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or full stream: reported as `StreamHandler` would
            self.handleError(logging.makeLogRecord({"msg": text}))


def batch_access_log(name: str, fmt: str) -> None:
    """Log lines in `fmt` with the time formatted once a second, and the access logger's
    lines in batches: a batched copy of the root logger's first stream handler (its
    stream and filters), and not also through the root."""
    formatter = SecondCachedFormatter(fmt)
    root_handlers = [
        h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
    ]
    for root_handler in root_handlers:
        root_handler.setFormatter(formatter)
    if not root_handlers:
        return
    source = root_handlers[0]
    handler = BatchedStreamHandler(source.stream)
    handler.setFormatter(formatter)
    handler.setLevel(source.level)
    for existing in source.filters:
        handler.addFilter(existing)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
