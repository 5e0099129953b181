"""The access log's cost per line, as `servicelab serve` writes it (`AccessLineWriter`)
against the same batches made into `logging` records (what it did before), in one run.

    python bench/access_log.py [--lines 100000] [--rounds 5]

Lines are added inside an event loop as the proxy adds them; both write to /dev/null in
256-line batches, with the lab's format and redaction. A tight loop: inside a busy lab
each line costs two to three times this (docs/proxy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servicelab.cli.log_output import AccessLineWriter, SecondCachedFormatter  # noqa: E402
from servicelab.cli.redaction import RedactSecrets  # noqa: E402
from servicelab.cli.serve import LOG_FORMAT, quicker_log_records  # noqa: E402
from servicelab.proxy.access_log import AccessLines  # noqa: E402

FIELDS = ("127.0.0.1", "GET", "/api/projects/bench/services/up/80/1k.html", 200, 1024, 0.41)
FIELDS += ("bench", "up", "80")


def per_line_us(lines: AccessLines, count: int) -> float:
    """Lines added inside an event loop, as the proxy adds them: a batch is handed on
    once MAX_LINES wait."""

    async def add_all() -> float:
        started = time.perf_counter()
        for _ in range(count):
            lines.add(FIELDS)
        return time.perf_counter() - started

    return asyncio.run(add_all()) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args, _ = parser.parse_known_args()
    quicker_log_records()  # as `servicelab serve` does
    sink = open(os.devnull, "w")  # noqa: SIM115
    formatter = SecondCachedFormatter(LOG_FORMAT)
    handler = logging.StreamHandler(sink)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("servicelab.access.bench")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    as_records = AccessLines(logger)
    written = AccessLines(write=AccessLineWriter(sink, LOG_FORMAT))
    records_us, writer_us = [], []
    for _ in range(args.rounds):
        records_us.append(per_line_us(as_records, args.lines))
        writer_us.append(per_line_us(written, args.lines))
    records, writer = statistics.median(records_us), statistics.median(writer_us)
    print(f"as logging records      {records:6.2f} us a line")
    print(f"AccessLineWriter        {writer:6.2f} us a line")
    print(f"writer / records        {writer / records:6.3f}")


if __name__ == "__main__":
    main()
