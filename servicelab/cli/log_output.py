"""How `servicelab serve` writes its log: the time formatted once a second, and the
access log's lines written in batches, not one write each.

The proxy logs one access line per request; written one by one, each costs a system call
and a flush. Like nginx's `access_log ... buffer=... flush=...`, the access lines are
written together: `servicelab.proxy.access_log` makes their records in batches (at most
half a second after a request) and flushes the access handler after each batch, which
writes them in one call. A lab killed with SIGKILL loses at most that last half second of
access lines; every other line is written at once.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

#: Lines kept before they are written, whether or not a flush came.
MAX_LINES = 256


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
    """A `StreamHandler` that keeps its lines and writes them together: once `max_lines`
    wait, and whenever it is flushed. It has no timer of its own: it serves a logger fed
    in batches (`servicelab.proxy.access_log.AccessLines` flushes it after each batch),
    and `logging.shutdown()` flushes it at exit."""

    def __init__(self, stream: TextIO, *, max_lines: int = MAX_LINES) -> None:
        super().__init__(stream)
        self.max_lines = max_lines
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Called by `handle()`, which holds the handler's lock.
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) >= self.max_lines:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # StreamHandler always has one
            self._write()
            super().flush()

    def close(self) -> None:
        self.flush()  # `logging.shutdown()` flushes first; a plain close must not lose lines
        super().close()

    def _write(self) -> None:
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
