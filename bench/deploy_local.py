"""Benchmark: from a deploy request to a healthy code service, on the local runtime.

    python bench/deploy_local.py [-n 5]

Starts a real lab (`servicelab serve` on a free port of 127.0.0.1, a temporary data
dir, SERVICELAB_RUNTIME=local) and deploys, n times each under new names:

- `tests/services/echo-service` (no dependencies)            aim: median < 1 s
- `tests/services/with-requirements` (one package, uv cache warmed by one deploy first)
                                                             aim: median < 3 s

For each it prints the median (and min/max) of: the deploy request's own latency; the time
until the API reports the service healthy (`isHealthy`); the time until the proxy route
`/api/projects/<p>/services/<s>/8091/` first answers 200. Polls every 20 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import until  # noqa: E402
from tests.labtools import LabProcess  # noqa: E402

SERVICES = ROOT / "tests" / "services"
PROJECT = "bench"
DEADLINE = 120.0


def deploy_once(client: httpx.Client, name: str, code: Path) -> tuple[float, float, float]:
    base = f"/api/projects/{PROJECT}/services"
    t0 = time.monotonic()
    response = client.post(base, params={"name": name}, json={"EXECUTE_CODE": str(code)})
    t_post = time.monotonic()
    if response.status_code >= 300:
        raise SystemExit(f"deploy of {name} failed: {response.status_code} {response.text}")

    def healthy() -> bool:
        data = client.get(f"{base}/{name}").json()["data"]
        if data.get("status") == "failed":
            raise SystemExit(f"{name} failed: {data}")
        return bool(data.get("isHealthy"))

    def proxied() -> bool:
        return client.get(f"{base}/{name}/8091/").status_code == 200

    t_healthy = until(healthy, f"{name} to be healthy", DEADLINE)
    t_proxy = until(proxied, f"{name} to answer through the proxy", DEADLINE)
    client.delete(f"{base}/{name}", params={"purge": "true"})
    return t_post - t0, t_healthy - t0, t_proxy - t0


def report(label: str, runs: list[tuple[float, float, float]], aim: float) -> bool:
    print(f"\n{label} (n={len(runs)})")
    ok = True
    for i, what in enumerate(("deploy request", "healthy (API)", "200 via proxy")):
        values = [run[i] for run in runs]
        median = statistics.median(values)
        print(
            f"  {what:15} median {median * 1000:7.0f} ms"
            f"   min {min(values) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms"
        )
        if i == 1:
            ok = median < aim
    print(f"  aim: healthy in < {aim:.0f} s -> {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="deploys per case (default 5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="servicelab-bench-") as tmp:
        lab = LabProcess(Path(tmp) / "data", env={"SERVICELAB_RUNTIME": "local"})
        lab.data_dir.mkdir()
        lab.start()
        try:
            with lab.client() as client:
                client.post("/api/projects", json={"name": PROJECT}).raise_for_status()
                plain = [
                    deploy_once(client, f"plain-{i}", SERVICES / "echo-service")
                    for i in range(args.n)
                ]
                deploy_once(client, "warm-up", SERVICES / "with-requirements")
                deps = [
                    deploy_once(client, f"deps-{i}", SERVICES / "with-requirements")
                    for i in range(args.n)
                ]
        finally:
            lab.stop()
        ok = report("code service without dependencies", plain, 1.0)
        ok = (
            report("code service with a one-package requirements.txt (warm uv cache)", deps, 3.0)
            and ok
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
