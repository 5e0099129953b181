"""`make bench`: every benchmark in turn. Each prints its figures and its ratios to a
baseline measured in the same run; none asserts a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [
    ("proxy: direct vs servicelab vs configurable-http-proxy", ["bench/proxy/run.py"]),
    ("proxy: --workers 2 vs 1 at 32 connections", ["bench/proxy/workers.py"]),
    ("access log: written straight vs as logging records", ["bench/access_log.py"]),
    ("deploy to healthy, local runtime", ["bench/deploy_local.py"]),
    ("deploy to healthy, Docker runtime vs docker run", ["bench/deploy_docker.py"]),
    ("model predictions/s: through the proxy vs the model server directly", ["bench/models.py"]),
    ("48 wrong log-ins at once", ["bench/login_storm.py"]),
]


def main() -> int:
    subprocess.run([str(ROOT / "scripts" / "setup-bench.sh")], check=True)
    failed = []
    for title, args in BENCHMARKS:
        if not (ROOT / args[0]).exists():
            continue
        print(f"\n=== {title} ===", flush=True)
        if subprocess.run([sys.executable, *args, *sys.argv[1:]], cwd=ROOT).returncode != 0:
            failed.append(title)
    if failed:
        print("\nfailed: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
