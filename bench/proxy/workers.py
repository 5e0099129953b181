"""servicelab's proxy with one process and with two on one port (SO_REUSEPORT, as
`servicelab serve --workers 2` runs), side by side in one run, at 32 connections.

    python bench/proxy/workers.py [--duration 10] [--rounds 3] [--connections 32]

The upstream is nginx (or node), as in run.py; each proxy is bench/proxy/serve.py.
Rounds are interleaved and the median run counts, so other load on the machine hits
both alike. Writes bench/results/proxy-workers-<time>.json too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    ROOT,
    ROUTE,
    SMALL,
    TOKEN,
    WrkResult,
    read_listening,
    running,
    upstream,
    wait_http,
    wrk,
)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument(
        "--connections",
        type=lambda value: max(int(c) for c in value.split(",")),
        default=32,
        help="connections (of a comma-separated list, the largest)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: scripts/setup-bench.sh")
    medians: dict[int, WrkResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="servicelab-bench-") as tmpdir,
        upstream(Path(tmpdir)) as (kind, up_port),
    ):
        commands = {
            n: [sys.executable, str(HERE / "serve.py"), str(up_port), TOKEN, str(n)] for n in (1, 2)
        }
        with (
            running(commands[1], stdout=subprocess.PIPE) as one,
            running(commands[2], stdout=subprocess.PIPE) as two,
        ):
            ports = {1: read_listening(one, 120), 2: read_listening(two, 120)}
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for port in ports.values():
                wait_http(f"http://127.0.0.1:{port}{ROUTE}{SMALL}", auth)
            runs: dict[int, list[WrkResult]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for n, port in ports.items():
                    url = f"http://127.0.0.1:{port}{ROUTE}{SMALL}"
                    result = wrk(f"workers={n}", url, args.connections, args.duration, True)
                    runs[n].append(result)
                    print(
                        f"  workers={n}  c={args.connections}  "
                        f"{result.requests_per_s:>9.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                        f"p99 {result.p99_ms:.3f} ms  errors {result.errors}",
                        flush=True,
                    )
            for n, results in runs.items():
                ordered = sorted(results, key=lambda r: r.requests_per_s)
                medians[n] = ordered[len(ordered) // 2]
    print(f"\nmedian runs ({kind} upstream, {args.connections} connections):")
    for n, r in medians.items():
        print(f"  --workers {n}: {r.requests_per_s:>9.0f} req/s  p50 {r.p50_ms:.3f} ms")
    ratio = medians[2].requests_per_s / medians[1].requests_per_s
    print(f"  workers 2 / workers 1: {ratio:.2f}x")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"proxy-workers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps({"results": [asdict(r) for r in medians.values()], "ratio": ratio}, indent=2)
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
