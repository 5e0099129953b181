"""Log files of local services: reading them back, following them across rotations.

The supervisor (`supervisor.py`) writes `logs/current.log` and rotates it to
`logs/previous.log`; every line starts with a fixed-width UTC timestamp, so that text
order is time order and `since` is a string comparison.
"""

from __future__ import annotations

import os
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STAMP_LEN = 27  # len("2024-01-02T03:04:05.123456Z")


def parse_stamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def format_since(since: datetime | None) -> str | None:
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def present(line: str, timestamps: bool) -> str:
    return line if timestamps else line[STAMP_LEN + 1 :]


class LogReader:
    """Reads `previous.log` then `current.log`, and then follows `current.log`.

    Keeps its open file and offset; when `current.log` is rotated away (a new inode under
    the name), it finishes the old file through its open descriptor, then switches.
    """

    def __init__(self, log_dir: Path) -> None:
        self.current = log_dir / "current.log"
        self.previous = log_dir / "previous.log"
        self._file: Any = None
        self._rest = b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_existing(self, tail: int | None, since: str | None) -> list[str]:
        # Open current first: if a rotation happens between the two opens, we may read a
        # few lines twice rather than lose them.
        self._file = _open_or_none(self.current)
        lines: deque[str] = deque(maxlen=tail if tail is not None else None)
        if tail == 0:
            if self._file is not None:
                self._file.seek(0, os.SEEK_END)
            return []
        prev_file = _open_or_none(self.previous)
        if prev_file is not None:
            with prev_file:
                _collect(prev_file.read(), lines, since)
        if self._file is not None:
            data = self._file.read()
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            _collect(data[:cut], lines, since)
        return list(lines)

    def read_new(self) -> list[str]:
        lines: deque[str] = deque()
        if self._file is None:
            self._file = _open_or_none(self.current)
            if self._file is None:
                return []
        while True:
            # Look for a rotation before reading: once `current.log` names a new file, no
            # writer appends to the old one, so this read gets all of it.
            try:
                rotated = os.stat(self.current).st_ino != os.fstat(self._file.fileno()).st_ino
            except FileNotFoundError:
                rotated = False
            data = self._rest + self._file.read()
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            _collect(data[:cut], lines, None)
            if not rotated:
                return list(lines)
            # Rotated twice since the last poll: the file now named previous.log was
            # never read; read it whole before moving on.
            old_ino = os.fstat(self._file.fileno()).st_ino
            self._file.close()
            self._rest = b""
            missed = _open_or_none(self.previous)
            if missed is not None:
                with missed:
                    if os.fstat(missed.fileno()).st_ino != old_ino:
                        _collect(missed.read(), lines, None)
            self._file = _open_or_none(self.current)
            if self._file is None:
                return list(lines)


def _open_or_none(path: Path) -> Any:
    try:
        return open(path, "rb")  # noqa: SIM115 - kept open across calls by LogReader
    except FileNotFoundError:
        return None


def _collect(data: bytes, out: deque[str], since: str | None) -> None:
    for raw in data.split(b"\n"):
        if not raw:
            continue
        line = raw.decode("utf-8", "replace")
        if len(line) <= STAMP_LEN or line[STAMP_LEN] != " ":
            continue  # not a line of ours (a torn write, or a foreign file)
        if since is not None and line[:STAMP_LEN] < since:
            continue
        out.append(line)
