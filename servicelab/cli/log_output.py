"""How `servicelab serve` writes its log: the time formatted once a second, and the
access log's lines written straight to the log's stream, a batch per write.

The proxy logs one access line per request. As a `logging` record each, a line cost
about 9 µs (making the record, filtering, formatting, the handler's lock), a tenth of
the whole request's CPU. `servicelab.proxy.access_log` batches the lines (at most half a
second after a request) and `AccessLineWriter` writes each batch in one call, each line
exactly as the log's format and `RedactSecrets` would have made it (a test compares the
two). A lab killed with SIGKILL loses at most that last half second of access lines;
every other line is written at once, through `logging`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TextIO

from servicelab.proxy.access_log import LINE, Fields, PendingLine, access_lines, access_logger

from .redaction import redact


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
        return self.asctime(record.created)

    def asctime(self, created: float) -> str:
        """The time `created` as `%(asctime)s` prints it by default."""
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        msecs = int((created - second) * 1000)  # as LogRecord has it
        return f"{self._text},{msecs:03d}"  # as `default_msec_format` has it


#: The record fields that differ from one access line to the next; every other field of
#: the format is the same on every line, and is written into the template once.
_PER_LINE = ("asctime", "message", "created", "msecs", "relativeCreated")
_FIELD = re.compile(r"%%|%\((\w+)\)([-#0 +]*\d*(?:\.\d+)?[a-zA-Z])")


class AccessLineWriter:
    """Writes batches of access lines to `stream` in the %-style format `fmt` (with any
    field of a record, its times those of the line's request), redacted, one write per
    batch (see the module's docstring)."""

    def __init__(self, stream: TextIO, fmt: str) -> None:
        self.stream = stream
        self.asctime = SecondCachedFormatter(fmt).asctime
        # The fields every access record has alike, from one record made the usual way.
        made = logging.LogRecord(access_logger.name, logging.INFO, "(proxy)", 0, "", None, None)
        self._made_at, self._made_relative = made.created, made.relativeCreated
        #: `fmt` with the fields alike filled in, and the per-line ones positional.
        self.template, self.per_line = _template(fmt, vars(made))

    def __call__(self, lines: list[PendingLine]) -> None:
        template, asctime = self.template, self.asctime
        if self.per_line == ("asctime", "message"):  # `servicelab serve`'s format
            out = [template % (asctime(created), LINE % args) for created, args in lines]
        else:
            out = [template % self._values(created, args) for created, args in lines]
        # Redacted once for the whole batch: no secret's pattern spans a line's end.
        text = redact("\n".join(out)) + "\n"
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream: there is nowhere left to say so

    def _values(self, created: float, args: Fields) -> tuple[object, ...]:
        values = {
            "asctime": self.asctime(created),
            "message": LINE % args,
            "created": created,
            "msecs": (created - int(created)) * 1000,
            "relativeCreated": self._made_relative + (created - self._made_at) * 1000,
        }
        return tuple(values[name] for name in self.per_line)


def _template(fmt: str, alike: dict[str, object]) -> tuple[str, tuple[str, ...]]:
    """`fmt` with the fields that are `alike` on every line written in (escaped), and
    the names of the others in the order of their positional `%` fields."""
    per_line: list[str] = []

    def fill(field: re.Match[str]) -> str:
        name, spec = field[1], field[2]
        if name is None:
            return "%%"
        if name in _PER_LINE:
            per_line.append(name)
            return "%" + spec
        return (("%" + spec) % (alike[name],)).replace("%", "%%")

    return _FIELD.sub(fill, fmt), tuple(per_line)


def write_access_log(fmt: str) -> None:
    """Log lines in `fmt` with the time formatted once a second, and the access log's
    lines written by an `AccessLineWriter` to the stream of the root logger's first
    stream handler."""
    formatter = SecondCachedFormatter(fmt)
    root_handlers = [
        h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
    ]
    for root_handler in root_handlers:
        root_handler.setFormatter(formatter)
    if root_handlers:
        access_lines.write = AccessLineWriter(root_handlers[0].stream, fmt)
