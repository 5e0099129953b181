"""The access log: its lines are made and written in batches, yet every line arrives, in
order, with its request's own time, soon after the request, and none is lost when the lab
stops; the time format is logging's own."""

from __future__ import annotations

import asyncio
import io
import logging
import time

from servicelab.cli.log_output import BatchedStreamHandler, SecondCachedFormatter
from servicelab.proxy.access_log import AccessLines


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


FIELDS = ("127.0.0.1", "GET", "/api/projects/p/services/s/80/", 200, 2, 0.4, "p", "s", 80)
LINE = '127.0.0.1 "GET /api/projects/p/services/s/80/" 200 2 0.4ms project=p service=s port=80'


def test_lines_are_written_together_in_order_within_the_delay() -> None:
    stream = _CountingStream()
    logger = _logger(BatchedStreamHandler(stream, max_lines=1000), "test.access.delay")
    lines = AccessLines(logger, max_lines=1000, max_delay=0.2)

    async def main() -> list[str]:
        for i in range(5):
            lines.add((*FIELDS[:3], 200 + i, *FIELDS[4:]))
        assert stream.getvalue() == ""  # waiting for the batch
        deadline = time.monotonic() + 10
        # A StringIO has no event to wait for: polled, with the deadline above.
        while not stream.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return stream.getvalue().splitlines()

    assert asyncio.run(main()) == [LINE.replace(" 200 ", f" {200 + i} ") for i in range(5)]
    assert stream.writes == 1


def test_a_full_batch_is_written_at_once_and_the_rest_at_close() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream, max_lines=3)
    logger = _logger(handler, "test.access.full")
    for i in range(4):
        logger.info("line %d", i)
    assert stream.getvalue().splitlines() == ["line 0", "line 1", "line 2"]
    handler.close()  # logging.shutdown() does this at exit
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(4)]


def test_without_an_event_loop_each_line_is_written_at_once() -> None:
    stream = io.StringIO()
    logger = _logger(BatchedStreamHandler(stream), "test.access.thread")
    AccessLines(logger).add(FIELDS)  # from a thread without a loop
    assert stream.getvalue() == LINE + "\n"


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
