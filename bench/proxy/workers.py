"""The whole lab's proxy with `servicelab serve --workers 1` and `--workers 2`, side by
side in one run, at 32 connections; the upstream reached directly is the baseline.

    flock /work/wt/bench.lock .venv/bin/python bench/proxy/workers.py \\
        [--duration 10] [--rounds 3] [--connections 32]

Two real labs on one real PostgreSQL (`scripts/setup-postgres.sh` gives the server; each
lab gets a fresh database of its own), the local runtime and the embedded proxy. Each gets
one project and one code service, deployed through its API, that runs nginx serving 1 KB
(`bench/nginx_service.py`); wrk fetches it through the lab's proxy with a project token,
so every request goes the lab's whole way (token check, route table, service-origin
rules, metrics). The targets take turns round after round and the median run of each
counts, so other load on the machine hits them alike. Prints requests/s, p50, p99, the
lab's CPU per request and the load average during each run, and writes
bench/results/proxy-workers-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.labapi import PASSWORD, call, login  # noqa: E402
from bench.nginx_service import SMALL, make_service  # noqa: E402
from bench.wrk import WrkResult, children, median_run, wrk  # noqa: E402
from tests.labtools import stop_local_services  # noqa: E402

PROJECT, SERVICE = "bench", "upstream"
ROUTE = f"/api/projects/{PROJECT}/services/{SERVICE}/8091"


@dataclass
class RunningLab:
    workers: int
    url: str
    pid: int  # `servicelab serve`; with --workers 2, the parent of the two workers
    token: str  # a project token of PROJECT
    service_port: int  # the service's nginx, reached directly


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(check: object, what: str, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, urllib.error.URLError):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what}: the lab exited with {proc.returncode}")
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(0.1)  # polling, with the deadline above


def answers(url: str, token: str = "") -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"servicelab_bench_{uuid.uuid4().hex[:12]}"
    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def lab(workers: int, database_url: str, tmp: Path) -> Iterator[RunningLab]:
    """`servicelab serve --workers <workers>` with the benchmark's service deployed."""
    base = tmp / f"workers-{workers}"
    data = base / "data"
    data.mkdir(parents=True)
    body = make_service(base / "service")
    port = free_port()
    env = {
        **os.environ,
        "SERVICELAB_DATABASE_URL": database_url,
        "SERVICELAB_DATA_DIR": str(data),
        "SERVICELAB_PORT": str(port),
        "SERVICELAB_HOST": "127.0.0.1",
        "SERVICELAB_RUNTIME": "local",
        "SERVICELAB_PROXY": "embedded",
        "SERVICELAB_ADMIN_PASSWORD": PASSWORD,
        "SERVICELAB_UV_CACHE_DIR": str(ROOT / ".cache" / "uv"),
    }
    log = open(base / "lab.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "servicelab", "serve", "--workers", str(workers)]
    # A session of its own: the lab and its workers are stopped as one process group.
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=log, cwd=ROOT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    admin = ""
    try:
        try:
            poll(lambda: answers(f"{url}/healthz"), f"the --workers {workers} lab", 180, proc)
            admin = login(url)
            call(f"{url}/api/projects", "POST", {"name": PROJECT}, admin)
            call(f"{url}/api/projects/{PROJECT}/services?name={SERVICE}", "POST", body, admin)
            token = str(call(f"{url}/api/projects/{PROJECT}/token", token=admin))
            poll(lambda: answers(f"{url}{ROUTE}{SMALL}", token), "the service", 120, proc)
            service_port = service_port_of(database_url)
            if workers > 1:  # every worker must serve before the first round
                poll(lambda: len(children(proc.pid)) == workers + 1, "the workers", 120, proc)
        except SystemExit as exc:
            log.flush()
            lines = (base / "lab.log").read_text(errors="replace").splitlines()
            text = "\n".join(line for line in lines if "servicelab.access" not in line)[-4000:]
            status: object = ""
            with contextlib.suppress(Exception, SystemExit):
                status = call(f"{url}/api/projects/{PROJECT}/services/{SERVICE}", token=admin)
            raise SystemExit(f"{exc}\nthe service: {status}\nthe lab's log:\n{text}") from None
        yield RunningLab(workers, url, proc.pid, token, service_port)
    finally:
        if admin:
            with contextlib.suppress(Exception, SystemExit):
                call(f"{url}/api/projects/{PROJECT}/services/{SERVICE}", "DELETE", token=admin)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        # The service outlives its lab by design (local runtime): if its delete failed,
        # stop it here, so that no process is left behind.
        stop_local_services(data)


def service_port_of(database_url: str) -> int:
    """The port the local runtime gave the service, from its row's handle."""
    import psycopg

    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT handle FROM services WHERE name = %s", (SERVICE,)).fetchone()
    if not row or not row[0]:
        raise SystemExit("the service's row names no instance")
    handle = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return int(handle["ports"]["8091"])


def postgres_server() -> str:
    url = os.environ.get("SERVICELAB_TEST_POSTGRES_URL")
    if url:
        return url
    script = ROOT / "scripts" / "setup-postgres.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


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
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin"):
            raise SystemExit(f"{tool} is missing: scripts/setup-bench.sh")
    server = postgres_server()
    runs: dict[str, list[WrkResult]] = {"direct": [], "--workers 1": [], "--workers 2": []}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="servicelab-bench-")))
        tmp.chmod(0o755)  # a sandboxed service reads its code and files from here
        labs = {
            n: stack.enter_context(lab(n, stack.enter_context(postgres_database(server)), tmp))
            for n in (1, 2)
        }
        for round_ in range(args.rounds):
            targets = [
                ("direct", f"http://127.0.0.1:{labs[1].service_port}{SMALL}", "", None),
                *(
                    (f"--workers {n}", f"{lab.url}{ROUTE}{SMALL}", lab.token, lab.pid)
                    for n, lab in labs.items()
                ),
            ]
            # Alternate the order of the two labs from round to round.
            if round_ % 2:
                targets[1], targets[2] = targets[2], targets[1]
            for name, url, token, pid in targets:
                pids = children(pid) if pid else None
                result = wrk(name, url, args.connections, args.duration, token, pids)
                runs[name].append(result)
                cpu = result.cpu_us_per_request
                print(
                    f"  round {round_ + 1}  {name:<12} c={args.connections}  "
                    f"{result.requests_per_s:>8.0f} req/s  p50 {result.p50_ms:.2f} ms  "
                    f"p99 {result.p99_ms:.2f} ms  "
                    + (f"lab cpu {cpu:.0f} us/req  " if cpu is not None else "")
                    + f"load {result.load_before:.1f}->{result.load_after:.1f}  "
                    f"errors {result.errors}",
                    flush=True,
                )
    medians = {name: median_run(results) for name, results in runs.items()}
    loads = [x for results in runs.values() for r in results for x in (r.load_before, r.load_after)]
    print(f"\nmedian runs ({args.rounds} rounds of {args.duration} s, c={args.connections}):")
    print("| target | req/s | p50 | p99 | lab CPU per request | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in medians.items():
        cpu = f"{r.cpu_us_per_request:.0f} µs" if r.cpu_us_per_request is not None else ""
        print(
            f"| {name} | {r.requests_per_s:.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms "
            f"| {cpu} | {r.errors} |"
        )
    ratio = medians["--workers 2"].requests_per_s / medians["--workers 1"].requests_per_s
    print(f"--workers 2 / --workers 1: {ratio:.2f}x requests/s")
    for n in (1, 2):
        share = medians[f"--workers {n}"].requests_per_s / medians["direct"].requests_per_s
        print(f"--workers {n} / direct: {share:.2f}")
    print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"proxy-workers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "medians": {name: asdict(r) for name, r in medians.items()},
        "runs": {name: [asdict(r) for r in results] for name, results in runs.items()},
        "ratio_workers_2_to_1": ratio,
        "cpus": os.cpu_count(),
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
