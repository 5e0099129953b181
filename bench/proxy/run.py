"""Benchmark servicelab's proxy against the same upstream reached directly and through
JupyterHub's configurable-http-proxy (CHP), all on 127.0.0.1, with `wrk`.

    python bench/proxy/run.py [--duration 3] [--rounds 12] [--connections 1,32]
    python -m bench.proxy.run --before REV [--rounds 20 --duration 2]   # compare.py

Every path reaches one upstream: an nginx serving 1 KB, started as a service of the
embedded lab by its local runtime. Needs `wrk`, `curl`, `nginx` with its Lua module, node
and CHP: scripts/setup-bench.sh.
Writes the figures to bench/results/proxy-<time>.json too. See bench/proxy/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.wrk import WrkResult  # noqa: E402
from bench.wrk import wrk as run_wrk  # noqa: E402

TOKEN = "bench-token-not-secret"
ROUTE = "/api/projects/bench/services/up/80"
SMALL = "/1k.html"
BIG = "/big.bin"
GIB = 1 << 30


def free_port() -> int:
    """For the servers that cannot take a socket (nginx, CHP): ask the kernel for a free
    port, then let them bind it. A small race, acceptable for a benchmark."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, headers: dict[str, str] | None = None, deadline: float = 30.0) -> None:
    import urllib.request

    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)  # polling interval, with the deadline above
    raise SystemExit(f"{url} did not come up: {last}")


def read_listening(proc: subprocess.Popen[bytes], deadline: float = 30.0) -> int:
    import select

    assert proc.stdout is not None
    end = time.monotonic() + deadline
    line = b""
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} did not start")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line += os.read(proc.stdout.fileno(), 1)
    return int(line.split()[1])


@contextlib.contextmanager
def running(cmd: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(
    name: str, url: str, connections: int, duration: int, token: str, pid: int | None = None
) -> WrkResult:
    """bench/wrk.py's run."""
    # 1 s of warm-up: every target is warm after its first round; this fills the pools
    # again after the other targets' turns.
    return run_wrk(name, url, connections, duration, token, [pid] if pid else None, warmup=1)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def download(url: str, token: str = TOKEN) -> tuple[float, float]:
    """(MiB/s, seconds) for a GiB through curl, which is faster than any Python client."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-H",
            f"Authorization: Bearer {token}",
            "-w",
            "%{size_download} %{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    size, seconds = int(out[0]), float(out[1])
    assert size == GIB, size
    return size / seconds / (1 << 20), seconds


PROXY_PASS_CONF = """
worker_processes auto;
daemon off;
pid {tmp}/pass.pid;
error_log {tmp}/pass-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {tmp}/pbody; proxy_temp_path {tmp}/pproxy;
  fastcgi_temp_path {tmp}/pfcgi; uwsgi_temp_path {tmp}/puwsgi; scgi_temp_path {tmp}/pscgi;
  upstream up {{ server {up}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


def proxy_pass(tmp: Path, up: str) -> tuple[list[str], int]:
    """Plain nginx `proxy_pass` to the upstream: what nginx costs with no lab at all."""
    port = free_port()
    conf = tmp / "pass.conf"
    conf.write_text(PROXY_PASS_CONF.format(tmp=tmp, up=up, port=port))
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert nginx
    return [nginx, "-c", str(conf), "-e", str(tmp / "pass-error.log")], port


def rss_sum_mib(pids: list[int]) -> float:
    return sum(peak_rss_mib(p) for p in pids)


#: Short names of the targets, as the summary and targets use them.
DIRECT, PASS, CHP, STAND_IN, EMBEDDED, NGINX, SERVICE = (
    "direct",
    "nginx proxy_pass",
    "CHP",
    "stand-in",
    "lab embedded",
    "lab nginx",
    "nginx lab's service",
)


#: The issue's targets at 32 connections: (target, baseline, least ratio of req/s).
TARGET_RATIOS = [
    (NGINX, CHP, 3.0),
    (NGINX, DIRECT, 0.5),
    (EMBEDDED, CHP, 1.5),
    (EMBEDDED, STAND_IN, 0.9),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,32", help="comma-separated")
    parser.add_argument(
        "--rounds",
        type=int,
        default=12,
        help="runs per target: each round runs every target once, in an order of its "
        "own; the median run counts, and each ratio is the median of the rounds' ratios",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="for the rounds' orders (default: random)"
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="measure a worktree of REV and this checkout, interleaved round by round "
        "(bench/proxy/compare.py)",
    )
    parser.add_argument(
        "--before-dir", default="/tmp/bench-before", help="the worktree of --before"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    if args.before:
        from bench.proxy.compare import compare

        compare(args, seed)
        return
    # A shuffled order per round: no target always follows the same one (or always runs
    # first, after the pause), so that what a target leaves behind (a busy upstream, a
    # warm cache) falls on all of them alike.
    orders = random.Random(seed)
    conns = [int(c) for c in args.connections.split(",")]
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    for tool in ("wrk", "node", "curl", "nginx"):
        if not shutil.which(tool, path=search):
            raise SystemExit(f"{tool} is missing: scripts/setup-bench.sh")
    chp = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
    if not chp.exists():
        raise SystemExit(f"CHP is missing: cd {HERE} && npm install")
    sys.path.insert(0, str(HERE))
    from lab import ROUTE as LAB_ROUTE
    from lab import nginx_pids, service_address, whole_lab

    results: list[WrkResult] = []
    downloads: dict[str, float] = {}
    loads = [os.getloadavg()]
    every_run: list[list[WrkResult]] = []
    #: connections -> target -> its runs, round by round
    rounds: dict[int, dict[str, list[WrkResult]]] = {}
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*loads[0]), flush=True)
    print(f"rounds ordered with --seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="servicelab-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx workers run as nobody when started by root
        embedded_port, nginx_port = free_port(), free_port()
        with (
            whole_lab(tmp, "embedded", embedded_port) as (embedded_pid, embedded_token),
            whole_lab(tmp, "nginx", nginx_port) as (_, nginx_token),
        ):
            # The one upstream every path shares: the embedded lab's service, an nginx
            # that the lab's local runtime started (sandboxed) the lab's normal way. The
            # nginx lab's service is the same program, measured directly as a check.
            up = service_address(tmp, "embedded")
            chp_port, chp_api = free_port(), free_port()
            chp_cmd = [
                str(chp),
                "--ip",
                "127.0.0.1",
                "--port",
                str(chp_port),
                "--api-ip",
                "127.0.0.1",
                "--api-port",
                str(chp_api),
                "--default-target",
                f"http://{up}",
                "--log-level",
                "warn",
            ]
            serve = [sys.executable, str(HERE / "serve.py"), up, TOKEN]
            pass_cmd, pass_port = proxy_pass(tmp, up)
            with (
                running(chp_cmd, stdout=subprocess.DEVNULL) as chp_proc,
                running(serve, stdout=subprocess.PIPE) as lab,
                running(pass_cmd),
            ):
                lab_port = read_listening(lab)
                auth = {"Authorization": f"Bearer {TOKEN}"}
                wait_http(f"http://127.0.0.1:{chp_port}{SMALL}")
                wait_http(f"http://127.0.0.1:{pass_port}{SMALL}")
                wait_http(f"http://127.0.0.1:{lab_port}{ROUTE}{SMALL}", auth)
                embedded_url = f"http://127.0.0.1:{embedded_port}{LAB_ROUTE}"
                nginx_url = f"http://127.0.0.1:{nginx_port}{LAB_ROUTE}"
                targets = [
                    (DIRECT, f"http://{up}{SMALL}", "", None),
                    (PASS, f"http://127.0.0.1:{pass_port}{SMALL}", "", None),
                    (CHP, f"http://127.0.0.1:{chp_port}{SMALL}", "", chp_proc.pid),
                    (STAND_IN, f"http://127.0.0.1:{lab_port}{ROUTE}{SMALL}", TOKEN, lab.pid),
                    (EMBEDDED, embedded_url + SMALL, embedded_token, embedded_pid),
                    (NGINX, nginx_url + SMALL, nginx_token, None),
                    (SERVICE, f"http://{service_address(tmp, 'nginx')}{SMALL}", "", None),
                ]
                for c in conns:
                    runs: dict[str, list[WrkResult]] = {t[0]: [] for t in targets}
                    every_run.extend(runs.values())
                    rounds[c] = runs
                    for _ in range(args.rounds):
                        for name, url, token, pid in orders.sample(targets, len(targets)):
                            result = wrk(name, url, c, args.duration, token, pid)
                            runs[name].append(result)
                            cpu = result.cpu_us_per_request
                            print(
                                f"  {name:<16} c={c:<3} {result.requests_per_s:>9.0f} req/s  "
                                f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
                                + (f"  cpu {cpu:.0f} us/req" if cpu else "")
                                + ("  (filter jump came back)" if result.disturbed else ""),
                                flush=True,
                            )
                    for name in runs:
                        ordered = sorted(runs[name], key=lambda r: r.requests_per_s)
                        results.append(ordered[len(ordered) // 2])
                # A GiB through each plane: the proxy's peak memory before and after.
                before = peak_rss_mib(embedded_pid)
                downloads["lab embedded GiB MiB/s"] = download(embedded_url + BIG, embedded_token)[
                    0
                ]
                downloads["lab embedded peak RSS MiB before"] = before
                downloads["lab embedded peak RSS MiB after"] = peak_rss_mib(embedded_pid)
                pids = nginx_pids(tmp, "nginx")
                before = rss_sum_mib(pids)
                downloads["lab nginx GiB MiB/s"] = download(nginx_url + BIG, nginx_token)[0]
                downloads["lab nginx peak RSS MiB before (master+workers)"] = before
                downloads["lab nginx peak RSS MiB after (master+workers)"] = rss_sum_mib(pids)
                downloads["direct GiB MiB/s"] = download(f"http://{up}{BIG}")[0]

    loads.append(os.getloadavg())
    all_runs = [r for per_target in every_run for r in per_target]
    jump_back = sum(r.disturbed for r in all_runs)

    def find(name: str, c: int) -> WrkResult:
        return next(r for r in results if r.target == name and r.connections == c)

    def paired(name: str, base: str, c: int) -> float:
        """The median over the rounds of `name`'s req/s over `base`'s in the same round:
        the two ran within a minute of each other, so a slow spell of the machine hits
        both (the ratio of the two medians may pair one's slow round with the other's
        quick one)."""
        by_round = zip(rounds[c][name], rounds[c][base], strict=True)
        return statistics.median(a.requests_per_s / b.requests_per_s for a, b in by_round)

    print("\nmedian runs (upstream: nginx, the embedded lab's service):")
    print(
        f"{'target':<16} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'cpu us/req':>10}"
    )
    for r in results:
        cpu_text = f"{r.cpu_us_per_request:>10.1f}" if r.cpu_us_per_request else f"{'-':>10}"
        print(
            f"{r.target:<16} {r.connections:>5} {r.requests_per_s:>10.0f} {r.p50_ms:>8.3f} "
            f"{r.p99_ms:>8.3f} {r.errors:>6} {cpu_text}"
        )
    summary: dict[str, float] = {}
    for c in conns:
        direct, chp_r = find(DIRECT, c), find(CHP, c)
        for name in (PASS, STAND_IN, EMBEDDED, NGINX):
            r = find(name, c)
            summary[f"{name}/direct req/s c={c}"] = r.requests_per_s / direct.requests_per_s
            summary[f"{name}/CHP req/s c={c}"] = r.requests_per_s / chp_r.requests_per_s
            summary[f"{name} added p50 ms c={c}"] = r.p50_ms - direct.p50_ms
        summary[f"CHP added p50 ms c={c}"] = chp_r.p50_ms - direct.p50_ms
        summary[f"{EMBEDDED}/{STAND_IN} req/s c={c}"] = (
            find(EMBEDDED, c).requests_per_s / find(STAND_IN, c).requests_per_s
        )
        for name, base, _ in TARGET_RATIOS:
            summary[f"{name}/{base} req/s c={c}, paired rounds"] = paired(name, base, c)
    summary.update(downloads)
    print()
    for key, value in summary.items():
        print(f"{key:<52} {value:10.3f}")
    checks: list[tuple[str, bool]] = []
    if 32 in conns:
        for name, base, least in TARGET_RATIOS:
            ratio = summary[f"{name}/{base} req/s c=32, paired rounds"]
            checks.append(
                (f"{name} >= {least}x {base} req/s at 32 (paired rounds)", ratio >= least)
            )
    if 1 in conns:
        checks.append(
            ("lab nginx adds <= 0.1 ms to p50 at 1", summary[f"{NGINX} added p50 ms c=1"] <= 0.1)
        )
    for what, ok in checks:
        print(f"target {what}: {'met' if ok else 'MISSED'}")
    print(
        "load average at the start {:.2f} {:.2f} {:.2f}, at the end {:.2f} {:.2f} {:.2f}".format(
            *loads[0], *loads[1]
        )
    )
    print(f"runs during which an older lab put the per-packet filter jump back: {jump_back}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "results": [asdict(r) for r in results],
                # Every run's req/s, round by round: to pool the paired ratios of runs.
                "rounds_req_s": {
                    str(c): {name: [r.requests_per_s for r in runs] for name, runs in by.items()}
                    for c, by in rounds.items()
                },
                "summary": summary,
                "load_average": {"start": loads[0], "end": loads[1]},
                "seed": seed,
                "rounds": args.rounds,
                "duration_s": args.duration,
                "runs_with_filter_jump_back": jump_back,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
