"""CPU and memory of a service's instance, and a short history of them for its page.

`Runtime.usage(handle)` answers a `Usage` where the runtime can tell (local processes:
/proc of the process group), else None. The history is sampled when the service page
asks (every few seconds while it is open), at most once per `MIN_SAMPLE_GAP`, and keeps
the last hour.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

#: Seconds between two samples of one service; a sooner ask reuses the last one.
MIN_SAMPLE_GAP = 2.0
#: Seconds of history kept.
HISTORY_SECONDS = 3600
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Usage:
    #: CPU seconds used since the instance started (all its processes).
    cpu_seconds: float
    #: Resident memory, bytes.
    memory_bytes: int


def process_group_usage(pgid: int, proc: Path = Path("/proc")) -> Usage | None:
    """CPU and resident memory of every process in the process group `pgid`."""
    cpu_ticks = 0
    pages = 0
    found = False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            rss = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # Fields after the command (which may hold spaces) start at "state".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 13 or int(fields[2]) != pgid:
            continue
        found = True
        cpu_ticks += int(fields[11]) + int(fields[12])  # utime + stime
        pages += rss
    if not found:
        return None
    return Usage(cpu_ticks / _TICKS, pages * _PAGE)


@dataclass
class Sample:
    at: float
    cpu_percent: float | None
    memory_bytes: int


class UsageHistory:
    """The last hour of samples of each service (by its key)."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[Sample]] = {}
        self._last_cpu: dict[str, tuple[float, float]] = {}

    def due(self, key: str, now: float | None = None) -> bool:
        samples = self._samples.get(key)
        now = time.time() if now is None else now
        return not samples or now - samples[-1].at >= MIN_SAMPLE_GAP

    def add(self, key: str, usage: Usage, now: float | None = None) -> None:
        now = time.time() if now is None else now
        percent = None
        last = self._last_cpu.get(key)
        if last is not None and now > last[0] and usage.cpu_seconds >= last[1]:
            percent = 100.0 * (usage.cpu_seconds - last[1]) / (now - last[0])
        self._last_cpu[key] = (now, usage.cpu_seconds)
        samples = self._samples.setdefault(key, deque(maxlen=int(HISTORY_SECONDS / MIN_SAMPLE_GAP)))
        samples.append(Sample(now, percent, usage.memory_bytes))

    def samples(self, key: str, since: float) -> list[Sample]:
        return [s for s in self._samples.get(key, ()) if s.at >= since]

    def forget(self, key: str) -> None:
        self._samples.pop(key, None)
        self._last_cpu.pop(key, None)
