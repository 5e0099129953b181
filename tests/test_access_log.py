"""The access log: its lines are made and written in batches, yet every line arrives, in
order, with its request's own time, soon after the request, and none is lost when the lab
stops; the time format is logging's own."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pytest

from servicelab.cli.log_output import AccessLineWriter, SecondCachedFormatter
from servicelab.cli.redaction import RedactSecrets
from servicelab.proxy.access_log import AccessLines


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


FIELDS = ("127.0.0.1", "GET", "/api/projects/p/services/s/80/", 200, 2, 0.4, "p", "s", 80)
LINE = '127.0.0.1 "GET /api/projects/p/services/s/80/" 200 2 0.4ms project=p service=s port=80'
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # `servicelab serve`'s


def _writer(stream: io.StringIO) -> AccessLineWriter:
    return AccessLineWriter(stream, FORMAT)


def test_lines_are_written_together_in_order_within_the_delay() -> None:
    stream = _CountingStream()
    lines = AccessLines(max_lines=1000, max_delay=0.2, write=_writer(stream))

    async def main() -> list[str]:
        for i in range(5):
            lines.add((*FIELDS[:3], 200 + i, *FIELDS[4:]))
        assert stream.getvalue() == ""  # waiting for the batch
        deadline = time.monotonic() + 10
        # A StringIO has no event to wait for: polled, with the deadline above.
        while not stream.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return stream.getvalue().splitlines()

    written = asyncio.run(main())
    assert [line.split(": ", 1)[1] for line in written] == [
        LINE.replace(" 200 ", f" {200 + i} ") for i in range(5)
    ]
    assert stream.writes == 1


def test_a_full_batch_is_written_at_once_and_the_rest_at_exit() -> None:
    stream = _CountingStream()
    lines = AccessLines(max_lines=3, max_delay=60, write=_writer(stream))

    async def main() -> None:
        for _ in range(4):
            lines.add(FIELDS)
        assert len(stream.getvalue().splitlines()) == 3 and stream.writes == 1

    asyncio.run(main())
    lines.flush()  # what the lab's exit does (atexit)
    assert len(stream.getvalue().splitlines()) == 4 and stream.writes == 2


def test_without_an_event_loop_each_line_is_written_at_once() -> None:
    stream = io.StringIO()
    AccessLines(write=_writer(stream)).add(FIELDS)  # from a thread without a loop
    assert stream.getvalue().endswith(f"INFO servicelab.access: {LINE}\n")


@pytest.mark.parametrize(
    "fmt",
    [
        FORMAT,
        # Fields alike on every line, per-line ones with flags, and a literal percent.
        "[%(process)d %(levelname)-8s %(msecs)03d %(relativeCreated)8.1f] 100%% "
        "%(name)s %(created)f %(module)s %(asctime)s %(message)s",
    ],
)
def test_written_lines_are_what_logging_would_write_redacted(fmt: str) -> None:
    """Each line as the format and `RedactSecrets` make it from a `logging` record."""
    token = "slp_Zx8-fakeTokenValue_123"
    paths = ["/x", f"/p/{token}/y", "/a?b", "/ünïcode/lab_token=abc", "/%s%d"]
    handler = _Collect()
    handler.addFilter(RedactSecrets())
    by_logging = AccessLines(_logger(handler, "servicelab.access"))
    stream = io.StringIO()
    writer = AccessLineWriter(stream, fmt)
    pending = []
    for i, path in enumerate(paths):
        created = 1796155989 + i * 0.3337  # across a second, each millisecond its own
        fields = ("::1", "POST", path, 404, i, i / 7, "p", "s", 8080)
        pending.append((created, fields))
        by_logging._pending.append((created, fields))
    writer(pending)
    by_logging.flush()
    formatter = logging.Formatter(fmt)
    assert stream.getvalue().splitlines() == [formatter.format(r) for r in handler.records]
    assert token not in stream.getvalue() and "slp_[redacted]" in stream.getvalue()


def test_a_closed_log_stream_loses_the_lines_quietly() -> None:
    stream = io.StringIO()
    stream.close()
    _writer(stream)([(time.time(), FIELDS)])  # no exception into the proxy's loop


def test_time_format_is_loggings_own() -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    ours, standard = SecondCachedFormatter(fmt), logging.Formatter(fmt)
    for created in (1796155989.0004, 1796155989.8934, 1796155990.5):
        record = logging.makeLogRecord({"msg": "hi", "name": "x", "levelname": "INFO"})
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)


def test_access_lines_are_made_later_with_each_requests_own_time() -> None:
    handler = _Collect()
    logger = _logger(handler, "test.access.lines")
    lines = AccessLines(logger, max_lines=1000, max_delay=0.2)

    async def main() -> float:
        lines.add(FIELDS)
        added = time.time()
        assert handler.records == []  # waiting for the batch
        deadline = time.monotonic() + 10
        # Polled, with the deadline above: the records are made by a timer of the loop.
        while not handler.records and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return added

    added = asyncio.run(main())
    [record] = handler.records
    assert record.getMessage() == LINE
    assert record.levelno == logging.INFO
    # The request's time, not the (later) time the record was made.
    assert added - 0.1 <= record.created <= added


def test_access_lines_outside_a_loop_and_at_exit_are_not_lost() -> None:
    handler = _Collect()
    lines = AccessLines(_logger(handler, "test.access.exit"), max_lines=1000, max_delay=60)
    fields = ("127.0.0.1", "GET", "/x", 200, 0, 0.1, "-", "-", "-")
    lines.add(fields)  # no running loop: made at once
    assert len(handler.records) == 1

    async def main() -> None:
        lines.add(fields)
        assert len(handler.records) == 1

    asyncio.run(main())
    lines.flush()  # what the lab's exit does (atexit)
    assert len(handler.records) == 2


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)
