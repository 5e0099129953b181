"""Signals (SIGTERM...) handed on to whichever child runs now, so that stopping the
executor stops the install step or the code it runs, and their exit status becomes ours."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


class _Forwarder:
    """Hands signals to whichever child runs now (an install step or the code).

    A signal that arrives between children is remembered: the run stops before the next
    step instead of starting it.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: int | None = None

    def install(self) -> None:
        for name in FORWARDED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _tty_delivered_to_group():
            # Ctrl-C in a terminal already reached the child (same process group).
            self.received = signum
            return
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            self.received = signum
        child = self.child
        if child is not None:
            # send_signal skips a child already reaped; poll inside never blocks on wait().
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def run(self, command: Sequence[str], **kwargs: object) -> int:
        if self.received is not None:
            return 128 + self.received
        self.child = subprocess.Popen(list(command), **kwargs)  # type: ignore[call-overload]
        try:
            if self.received is not None and self.child.poll() is None:
                self.child.send_signal(self.received)
            returncode = self.child.wait()
        finally:
            self.child = None
        return 128 - returncode if returncode < 0 else returncode


def _tty_delivered_to_group() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


FORWARDER = _Forwarder()
