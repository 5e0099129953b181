"""Benchmark: predictions per second from a model service, through servicelab's proxy and
from the model server reached directly, at 1 and 32 connections, in one run.

    python bench/models.py [--duration 10]

Starts a real lab (`servicelab serve`, local runtime, temporary data dir), trains a small
scikit-learn classifier (4 features), uploads and deploys it with
`POST /api/projects/bench/files/models/deploy`, and once it is ready runs `wrk` against:

- direct: the model server's own port on 127.0.0.1 (from the service's runtime handle);
- servicelab: the proxy route `/api/projects/bench/services/<name>/8091/...` with a
  project token.

Each request is one V2 inference of one row (`POST /v2/models/<name>/infer`), so
requests/s are predictions/s; `/predict` with one row is measured as well. Rounds are
interleaved (direct, proxy, direct, proxy...) so that a busy machine slows both alike;
the median round is printed, with the ratio proxy/direct. Needs `wrk`
(scripts/setup-bench.sh). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.labtools import LabProcess, stop_local_services, wait_until  # noqa: E402

PROJECT = "bench"
NAME = "classifier"
ROW = [0.5, -1.0, 2.0, 0.1]


@dataclass
class Run:
    target: str
    route: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def train(folder: Path) -> Path:
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=500, n_features=4, random_state=0)
    path = folder / "classifier.joblib"
    joblib.dump(LogisticRegression().fit(x, y), path)
    return path


def lua_script(folder: Path, body: str, token: str | None) -> Path:
    """A wrk script that POSTs `body` as JSON (with the token, for the proxy)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    script = folder / f"post-{'auth' if token else 'direct'}-{abs(hash(body))}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk(url: str, script: Path, connections: int, duration: int) -> tuple[float, float, float, int]:
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", str(script)]
    subprocess.run([*base, "-d2s", url], capture_output=True, check=True)  # warm-up
    out = subprocess.run(
        [*base, f"-d{duration}s", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return rps, percentile(out, "50%"), percentile(out, "99%"), errors


def percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{re.escape(which)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert match, out
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def direct_port(data_dir: Path) -> int:
    """The model server's own port, from the service's runtime handle in the lab's DB."""
    with sqlite3.connect(data_dir / "servicelab.db") as db:
        (handle,) = db.execute("select handle from services where name = ?", (NAME,)).fetchone()
    return int(json.loads(handle)["ports"]["8091"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: run scripts/setup-bench.sh (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="servicelab-bench-models-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        data_dir.mkdir()
        model = train(folder)
        lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
        try:
            runs = measure(lab, data_dir, model, folder, args.duration, args.rounds)
        finally:
            lab.stop()
            stop_local_services(data_dir)
    report(runs)


def measure(
    lab: LabProcess, data_dir: Path, model: Path, folder: Path, duration: int, rounds: int
) -> list[Run]:
    with lab.client() as api:
        api.post("/api/projects", json={"name": PROJECT})
        key = api.post(
            f"/api/projects/{PROJECT}/files/upload",
            params={"dataType": "models", "fileName": model.name},
            files={"file": (model.name, model.read_bytes())},
        ).json()["data"]
        r = api.post(
            f"/api/projects/{PROJECT}/files/models/deploy", params={"fileKey": key, "name": NAME}
        )
        assert r.status_code == 201, r.text
        started = time.monotonic()
        wait_until(
            lambda: api.get(f"/api/projects/{PROJECT}/services/{NAME}").json()["data"]["isHealthy"],
            timeout=600,
            interval=0.2,
            what="the model service to be ready",
        )
        print(f"deployed and ready in {time.monotonic() - started:.1f} s", flush=True)
        token = str(api.get(f"/api/projects/{PROJECT}/token").json()["data"])
    direct = f"http://127.0.0.1:{direct_port(data_dir)}"
    proxied = f"{lab.url}/api/projects/{PROJECT}/services/{NAME}/8091"
    v2 = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    )
    routes = {f"/v2/models/{NAME}/infer": v2, "/predict": json.dumps([ROW])}
    for route, body in routes.items():  # both ways answer the same before measuring
        answers = [
            httpx.post(f"{base}{route}", content=body, headers=headers, timeout=10).status_code
            for base, headers in ((direct, {}), (proxied, {"Authorization": f"Bearer {token}"}))
        ]
        assert answers == [200, 200], answers
    runs: list[Run] = []
    for route, body in routes.items():
        scripts = {
            "direct": lua_script(folder, body, None),
            "servicelab": lua_script(folder, body, token),
        }
        bases = {"direct": direct, "servicelab": proxied}
        for connections in (1, 32):
            for _ in range(rounds):
                for target in ("direct", "servicelab"):
                    rps, p50, p99, errors = wrk(
                        bases[target] + route, scripts[target], connections, duration
                    )
                    runs.append(Run(target, route, connections, rps, p50, p99, errors))
                    print(
                        f"{route:28} {target:10} c={connections:<3} {rps:8.0f} req/s "
                        f"p50 {p50:.2f} ms p99 {p99:.2f} ms errors {errors}",
                        flush=True,
                    )
    return runs


def median_run(runs: list[Run], route: str, connections: int, target: str) -> Run:
    chosen = [r for r in runs if (r.route, r.connections, r.target) == (route, connections, target)]
    value = statistics.median_low([r.requests_per_s for r in chosen])
    return next(r for r in chosen if r.requests_per_s == value)


def report(runs: list[Run]) -> None:
    print(
        "\n| route | connections | direct pred/s | servicelab pred/s | servicelab/direct "
        "| p50 direct | p50 servicelab |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route in dict.fromkeys(r.route for r in runs):
        for connections in (1, 32):
            d = median_run(runs, route, connections, "direct")
            s = median_run(runs, route, connections, "servicelab")
            ratio = s.requests_per_s / d.requests_per_s
            print(
                f"| `{route}` | {connections} | {d.requests_per_s:.0f} | "
                f"{s.requests_per_s:.0f} | {ratio:.2f} | {d.p50_ms:.2f} ms | {s.p50_ms:.2f} ms |"
            )
    errors = sum(r.errors for r in runs)
    print(f"\nerrors (socket errors and non-2xx) over all runs: {errors}")


if __name__ == "__main__":
    main()
