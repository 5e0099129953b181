"""What every part of the executor shares: its user-facing error, the stop by signal,
its log line and its exit codes."""

from __future__ import annotations

import sys

DEFAULT_PORT = "8091"
EXIT_FAILURE = 1


class ExecuteError(Exception):
    """A problem for the user to fix; printed as one message, never as a traceback."""


class Stopped(Exception):
    """A forwarded signal (SIGTERM...) stopped the run before the code started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def log(message: str) -> None:
    print(f"[execute] {message}", file=sys.stderr, flush=True)
