"""wrk runs for the benchmarks that drive whole labs: one run's figures, the CPU the lab's
processes spent per request, and the median of interleaved rounds.

The CPU is counted over several processes, as a lab with `--workers N` has.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WrkResult:
    target: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU time (user + system) the target's processes spent per request: unlike
    #: requests/s, hardly moved by other load on a shared machine.
    cpu_us_per_request: float | None = None
    #: The 1-minute load average just before and just after the run.
    load_before: float = 0.0
    load_after: float = 0.0
    #: Something changed the machine under the run (bench/proxy/run.py: an older lab put
    #: the packet filter's jump for every packet back).
    disturbed: bool = False


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes `pids` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """A process and its direct children (`servicelab serve --workers N`: the workers)."""
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(c) for c in found)]


def wrk(
    target: str,
    url: str,
    connections: int,
    duration: int,
    token: str = "",
    pids: list[int] | None = None,
    warmup: int = 2,
) -> WrkResult:
    """`wrk -t1 -c<connections> -d<duration>s --latency` after a `warmup` s warm-up."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    # A short warm-up fills connection pools and caches.
    subprocess.run([*cmd[:3], f"-d{warmup}s", *cmd[4:], url], capture_output=True, check=True)
    load_before = load_average()
    cpu_before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - cpu_before if pids else None
    total = int(_field(out, r"(\d+) requests in"))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(
        target=target,
        connections=connections,
        requests_per_s=float(_field(out, r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_percentile(out, "50%"),
        p99_ms=_percentile(out, "99%"),
        errors=errors,
        cpu_us_per_request=cpu * 1e6 / total if cpu is not None and total else None,
        load_before=load_before,
        load_after=load_average(),
    )


def median_run(results: list[WrkResult]) -> WrkResult:
    """The run with the median requests/s (an odd number of rounds gives a real run)."""
    ordered = sorted(results, key=lambda r: r.requests_per_s)
    return ordered[len(ordered) // 2]


def _field(out: str, pattern: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    return match.group(1)


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{re.escape(which)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if match is None:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
