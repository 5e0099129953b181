"""What the deploy benchmarks share: the moment a condition first holds."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

#: Seconds between two looks: small against the times measured.
POLL = 0.02


def until(check: Callable[[], bool], what: str, deadline: float) -> float:
    """Poll `check` until true; return the monotonic time it first was."""
    end = time.monotonic() + deadline
    while True:
        try:
            if check():
                return time.monotonic()
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(POLL)
