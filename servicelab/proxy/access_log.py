"""The proxy's access log: one INFO line per request on the `servicelab.access` logger,
made in batches.

A log record made in the middle of a request is slow: measured in the whole lab at 32
connections, the line cost about a fifth of a request's CPU, two to three times what the
same line costs in a tight loop, as each one runs with the caches full of everything
else. So a request only keeps its line's fields (a tuple), and the lines are handed on
together, with each request's own time, `MAX_DELAY` seconds after the first line waiting
or once `MAX_LINES` wait, and at the latest when the loop that called `add` is gone
(`flush`, also at exit).

Handed on to `write` when there is one: `servicelab serve` writes each batch straight to
its log (`servicelab.cli.log_output.AccessLineWriter`). Otherwise each line becomes a
`logging` record on the logger, and everything of `logging` applies: levels, handlers,
filters, formats.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from collections.abc import Callable

access_logger = logging.getLogger("servicelab.access")

#: The line's format; never the query string (it may hold a `lab_token`) nor a header.
LINE = '%s "%s %s" %d %d %.1fms project=%s service=%s port=%s'
#: Lines kept before their records are made.
MAX_LINES = 256
#: Seconds a line waits at most.
MAX_DELAY = 0.5

#: client, method, path, status, bytes sent, milliseconds, project, service, port
Fields = tuple[str | int | float, ...]
#: A line waiting: its request's time, and its fields.
PendingLine = tuple[float, Fields]


class AccessLines:
    def __init__(
        self,
        logger: logging.Logger = access_logger,
        *,
        max_lines: int = MAX_LINES,
        max_delay: float = MAX_DELAY,
        write: Callable[[list[PendingLine]], None] | None = None,
    ) -> None:
        self.logger = logger
        #: Writes a batch itself (`servicelab serve`'s `AccessLineWriter`); None: one
        #: `logging` record per line, on `logger`.
        self.write = write
        self.max_lines = max_lines
        self.max_delay = max_delay
        self._pending: list[PendingLine] = []
        #: The loop that will call `flush` (None: no flush is due).
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def add(self, fields: Fields) -> None:
        """Keep one request's line (call it only when INFO is on for the logger)."""
        self._pending.append((time.time(), fields))
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        other_loop_due = self._flush_loop is not None and self._flush_loop is not loop
        if len(self._pending) >= self.max_lines or loop is None or other_loop_due:
            self.flush()
        elif self._flush_loop is None:
            loop.call_later(self.max_delay, self.flush)
            self._flush_loop = loop

    def flush(self) -> None:
        """Make and hand on the records of every line waiting."""
        # A flush already due stays due (it will find nothing, or the next lines).
        self._flush_loop = None
        pending, self._pending = self._pending, []
        if self.write is not None:
            if pending:
                self.write(pending)
            return
        logger = self.logger
        for created, args in pending:
            record = logger.makeRecord(logger.name, logging.INFO, "(proxy)", 0, LINE, args, None)
            record.relativeCreated -= (record.created - created) * 1000
            record.created = created
            record.msecs = (created - int(created)) * 1000
            logger.handle(record)


access_lines = AccessLines()
atexit.register(access_lines.flush)
