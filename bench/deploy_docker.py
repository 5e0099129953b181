"""Benchmark: from a deploy request to a healthy service on the Docker runtime, beside a
plain `docker run` of the same image, measured in the same run.

    python bench/deploy_docker.py [-n 5]

Needs a Docker engine with servicelab's images (`scripts/setup-docker.sh`). Starts a real
lab (`servicelab serve` on a free port of 127.0.0.1, a temporary data dir,
SERVICELAB_RUNTIME=docker, an instance id of its own) and measures, n times each after
one warm-up that is not counted, alternating the lab and the baseline:

- the FastAPI example (`servicelab/example-fastapi:test`, port 8080);
- a code service in the runtime image (`servicelab/runtime:test`, EXECUTE_CODE = the
  folder `examples/code-service`, port 8091).

For the lab: the deploy request's own latency, the time until the API says the service
is healthy (`isHealthy`), and the time until its proxy route first answers 200. For the
baseline: `docker run -d -p 127.0.0.1::PORT` (the CLI, what a user would type), the time
until the published port first answers 200, and the time until the engine reports the
image's HEALTHCHECK healthy. Both images check health every 5 s and Docker runs the first
check one interval after the start, so "healthy" cannot come before ~5 s either way; the
ratio of healthy to healthy is the lab's own overhead. Polls every 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import POLL, until  # noqa: E402
from tests.labtools import LabProcess  # noqa: E402

EXAMPLE_IMAGE = "servicelab/example-fastapi:test"
RUNTIME_IMAGE = "servicelab/runtime:test"
CODE_FOLDER = ROOT / "examples" / "code-service"
PROJECT = "bench"
BENCH_LABEL = "org.servicelab.bench"
DEADLINE = 180.0


@dataclass(frozen=True)
class Case:
    label: str
    image: str
    port: int
    #: Environment of the deploy (the body of ML Lab's POST).
    env: dict[str, str]
    #: `docker run` options that make the baseline the same service.
    run_args: tuple[str, ...] = ()
    code: bool = False


CASES = (
    Case("FastAPI example image", EXAMPLE_IMAGE, 8080, {"GREETING": "bench"}),
    Case(
        "code service (examples/code-service) in the runtime image",
        RUNTIME_IMAGE,
        8091,
        {"EXECUTE_CODE": str(CODE_FOLDER), "GREETING": "bench"},
        ("-v", f"{CODE_FOLDER}:/workspace/code:ro", "-e", "EXECUTE_CODE=/workspace/code"),
        code=True,
    ),
)


@dataclass
class Timings:
    """Seconds from the start of each run, one list per measured moment."""

    moments: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self.moments.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.moments[name])


# --- the lab --------------------------------------------------------------------------------


def deploy_once(client: httpx.Client, case: Case, name: str) -> dict[str, float]:
    base = f"/api/projects/{PROJECT}/services"
    params = {"name": name} if case.code else {"name": name, "image": case.image}
    t0 = time.monotonic()
    response = client.post(base, params=params, json=case.env)
    t_post = time.monotonic()
    if response.status_code >= 300:
        raise SystemExit(f"deploy of {name} failed: {response.status_code} {response.text}")

    def healthy() -> bool:
        data = client.get(f"{base}/{name}").json()["data"]
        if data.get("status") == "failed":
            raise SystemExit(f"{name} failed: {data.get('reason')}")
        return bool(data.get("isHealthy"))

    def proxied() -> bool:
        return client.get(f"{base}/{name}/{case.port}/").status_code == 200

    # The route usually answers before the health check passes: watch both at once.
    t_proxy = t_healthy = None
    end = time.monotonic() + DEADLINE
    while t_proxy is None or t_healthy is None:
        try:
            if t_proxy is None and proxied():
                t_proxy = time.monotonic()
            if t_healthy is None and healthy():
                t_healthy = time.monotonic()
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {name}")
        time.sleep(POLL)
    client.delete(f"{base}/{name}", params={"purge": "true"}).raise_for_status()
    return {"request": t_post - t0, "first 200": t_proxy - t0, "healthy": t_healthy - t0}


# --- the baseline: docker run ---------------------------------------------------------------


def docker_run_once(engine: docker.DockerClient, case: Case, run_id: str) -> dict[str, float]:
    command = [
        "docker", "run", "-d",
        "--label", f"{BENCH_LABEL}={run_id}",
        "-p", f"127.0.0.1::{case.port}",
        *(arg for key, value in case.env.items() if key != "EXECUTE_CODE"
          for arg in ("-e", f"{key}={value}")),
        *case.run_args,
        case.image,
    ]  # fmt: skip
    t0 = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    t_run = time.monotonic()
    if result.returncode != 0:
        raise SystemExit(f"docker run failed: {result.stderr.strip()}")
    container = engine.containers.get(result.stdout.strip())
    try:
        bindings = container.attrs["NetworkSettings"]["Ports"][f"{case.port}/tcp"]
        url = f"http://127.0.0.1:{bindings[0]['HostPort']}/"
        with httpx.Client(timeout=5, trust_env=False) as http:
            t_200 = until(
                lambda: http.get(url).status_code == 200, f"{case.image} to answer", DEADLINE
            )

        def healthy() -> bool:
            container.reload()
            if container.status == "exited":
                raise SystemExit(f"{case.image} exited: {container.logs()[-2000:]!r}")
            return bool(container.attrs["State"].get("Health", {}).get("Status") == "healthy")

        t_healthy = until(healthy, f"{case.image} to be healthy", DEADLINE)
    finally:
        container.remove(force=True, v=True)
    return {"request": t_run - t0, "first 200": t_200 - t0, "healthy": t_healthy - t0}


# --- the run --------------------------------------------------------------------------------


def measure(
    engine: docker.DockerClient, client: httpx.Client, case: Case, n: int, run_id: str
) -> tuple[Timings, Timings]:
    lab, plain = Timings(), Timings()
    # One of each first, not counted: the project network, page cache, the engine's caches.
    docker_run_once(engine, case, run_id)
    deploy_once(client, case, f"warm-{secrets.token_hex(2)}")
    for i in range(n):
        plain.add(**docker_run_once(engine, case, run_id))
        lab.add(**deploy_once(client, case, f"run-{i}-{secrets.token_hex(2)}"))
    return lab, plain


def report(case: Case, lab: Timings, plain: Timings, n: int) -> None:
    print(f"\n{case.label} ({case.image}, port {case.port}), n={n}, medians:")
    print(f"  {'':28} {'lab':>9} {'docker run':>11} {'ratio':>7}")
    rows = (
        ("request returns", "request"),
        ("first HTTP 200", "first 200"),
        ("healthy", "healthy"),
    )
    for title, key in rows:
        ours, theirs = lab.median(key), plain.median(key)
        print(f"  {title:28} {ours * 1000:7.0f}ms {theirs * 1000:9.0f}ms {ours / theirs:6.2f}x")
    healthy_vs_200 = lab.median("healthy") / plain.median("first 200")
    print(f"  {'lab healthy / docker run 200':28} {'':>9} {'':>11} {healthy_vs_200:6.2f}x")
    values = lab.moments["healthy"]
    print(f"  lab healthy: min {min(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms")


def cleanup(engine: docker.DockerClient, instance_id: str, run_id: str) -> None:
    for label in (f"servicelab.instance={instance_id}", f"{BENCH_LABEL}={run_id}"):
        for container in engine.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for volume in engine.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
        for network in engine.networks.list(filters={"label": label}):
            network.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="runs per case (default 5)")
    args = parser.parse_args()
    engine = docker.from_env(timeout=120)
    for case in CASES:
        try:
            engine.images.get(case.image)
        except docker.errors.ImageNotFound:
            raise SystemExit(f"{case.image} is missing: run scripts/setup-docker.sh") from None
    instance_id = f"bench-{secrets.token_hex(4)}"
    run_id = secrets.token_hex(4)
    results: list[tuple[Case, Timings, Timings]] = []
    with tempfile.TemporaryDirectory(prefix="servicelab-bench-") as tmp:
        env: dict[str, Any] = {
            "SERVICELAB_RUNTIME": "docker",
            "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
            "SERVICELAB_INSTANCE_ID": instance_id,
        }
        lab = LabProcess(Path(tmp) / "data", env=env)
        lab.data_dir.mkdir()
        lab.start()
        try:
            with lab.client(trust_env=False) as client:
                client.post("/api/projects", json={"name": PROJECT}).raise_for_status()
                for case in CASES:
                    lab_times, plain_times = measure(engine, client, case, args.n, run_id)
                    results.append((case, lab_times, plain_times))
        finally:
            lab.stop()
            cleanup(engine, instance_id, run_id)
            engine.close()
    for case, lab_times, plain_times in results:
        report(case, lab_times, plain_times, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
