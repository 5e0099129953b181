"""Which of a failed service's last log lines says why it failed.

A process that dies of an exception prints a traceback and, last, `SomeError: message`;
servicelab's executor and model server end with such a line too (`ModelError: ...`). That
line, rather than a bare "exited with code 1", is what a user needs in the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*:")
#: A reason stays readable: at most this many characters of the line.
MAX_LENGTH = 300


def telling_line(lines: Iterable[str]) -> str | None:
    """The last exception line, else the last non-empty line that is no executor progress
    line (`[execute] running ...`), else None."""
    useful = [
        line.strip()
        for line in lines
        if line.strip() and (not line.startswith("[execute] ") or "error" in line.lower())
    ]
    if not useful:
        return None
    found = next((s for s in reversed(useful) if EXCEPTION_LINE.match(s)), useful[-1])
    return found[:MAX_LENGTH]
