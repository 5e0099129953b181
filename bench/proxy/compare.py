"""The proxy benchmark on two checkouts in one run, interleaved: before and after a change.

    python -m bench.proxy.run --before 12ad36d --rounds 20 --duration 2

Two back-to-back runs of `run.py` cannot tell a 5% change on a shared 2-core machine: the
same ratio moves by ±4 to 13% from one run to the next. So both checkouts run at once,
each with its own labs (embedded and nginx plane), its own stand-in (`ProxyApp` of that
checkout alone) and its own CHP, all pointed at that checkout's upstream (the embedded
lab's service), and every measurement is taken twice, once per checkout, one right after
the other:

- "before" is a git worktree of `--before` (made here if missing, reused if present; the
  main checkout's git state is not touched otherwise), its labs and stand-in run with its
  own source first on the path; "after" is this checkout. The harness (this file, wrk,
  CHP, the service's nginx) is the same for both: only servicelab's code differs.
- a round runs every (scenario, target) once per checkout, in an order shuffled per
  round; the checkout that goes first alternates from round to round (ABBA), so that
  what one leaves behind (a busy upstream, a warm cache) and the machine's drift over the
  seconds between them fall on both alike, over an even number of rounds exactly.
- per round and checkout, a ratio is target/baseline as `run.py` prints it (the lab's
  planes over direct, CHP and the stand-in); its change is after/before of the same
  round. The figure reported is the median of those paired changes, with a 95% interval
  from a bootstrap over the rounds (resampling whole rounds), next to the median ratio
  of each checkout.

Not measured here: the GiB download and peak memory (`run.py`); the nginx plane's added
p50 at 1 connection is printed per checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.proxy.lab import ROUTE as LAB_ROUTE
from bench.proxy.lab import service_address, whole_lab
from bench.proxy.run import (
    CHP,
    DIRECT,
    EMBEDDED,
    HERE,
    NGINX,
    ROOT,
    ROUTE,
    SMALL,
    STAND_IN,
    TARGET_RATIOS,
    TOKEN,
    free_port,
    read_listening,
    running,
    wait_http,
    wrk,
)
from bench.wrk import WrkResult

LARGE = "/64k.bin"
BEFORE, AFTER = "before", "after"
#: Bootstrap resamples of the rounds for each interval.
RESAMPLES = 4000
#: The issue's bar: a ratio may drop by less than this.
MOST_DROP = 0.05


@dataclass(frozen=True)
class Scenario:
    body: str
    connections: int

    @property
    def name(self) -> str:
        size = "1 KB" if self.body == SMALL else "64 KB"
        return f"{size} c={self.connections}"


@dataclass(frozen=True)
class Target:
    """One way to the upstream: the URL before the body's path, a token, the pid whose CPU
    is counted."""

    base: str
    token: str = ""
    pid: int | None = None


def worktree(rev: str, path: Path) -> Path:
    """A detached worktree of `rev` at `path`: made once, then reused (never moved to
    another commit: a worktree at another commit is an error to resolve by hand)."""
    wanted = _git("rev-parse", f"{rev}^{{commit}}")
    if not path.exists():
        _git("worktree", "add", "--detach", str(path), wanted)
    have = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if have != wanted:
        raise SystemExit(f"{path} is at {have[:12]}, not {rev} ({wanted[:12]}): remove it first")
    return path


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def checkout_targets(root: Path, tmp: Path) -> Iterator[dict[str, Target]]:
    """One checkout's labs, stand-in and CHP, all reaching its embedded lab's service."""
    tmp.mkdir(mode=0o755)
    env = {**os.environ, **({"PYTHONPATH": str(root)} if root != ROOT else {})}
    embedded_port, nginx_port = free_port(), free_port()
    with (
        whole_lab(tmp, "embedded", embedded_port, root) as (embedded_pid, embedded_token),
        whole_lab(tmp, "nginx", nginx_port, root) as (_, nginx_token),
    ):
        up = service_address(tmp, "embedded")
        chp_port = free_port()
        chp_cmd = [
            str(HERE / "node_modules" / ".bin" / "configurable-http-proxy"),
            *("--ip", "127.0.0.1", "--port", str(chp_port)),
            *("--api-ip", "127.0.0.1", "--api-port", str(free_port())),
            *("--default-target", f"http://{up}", "--log-level", "warn"),
        ]
        # This checkout's serve.py, on the measured checkout's servicelab (PYTHONPATH).
        serve = [sys.executable, str(HERE / "serve.py"), up, TOKEN]
        with (
            running(chp_cmd, stdout=subprocess.DEVNULL) as chp_proc,
            running(serve, stdout=subprocess.PIPE, env=env, cwd=root) as stand_in,
        ):
            stand_in_port = read_listening(stand_in)
            wait_http(f"http://127.0.0.1:{chp_port}{SMALL}")
            wait_http(
                f"http://127.0.0.1:{stand_in_port}{ROUTE}{SMALL}",
                {"Authorization": f"Bearer {TOKEN}"},
            )
            yield {
                DIRECT: Target(f"http://{up}"),
                CHP: Target(f"http://127.0.0.1:{chp_port}", pid=chp_proc.pid),
                STAND_IN: Target(f"http://127.0.0.1:{stand_in_port}{ROUTE}", TOKEN, stand_in.pid),
                EMBEDDED: Target(
                    f"http://127.0.0.1:{embedded_port}{LAB_ROUTE}", embedded_token, embedded_pid
                ),
                NGINX: Target(f"http://127.0.0.1:{nginx_port}{LAB_ROUTE}", nginx_token),
            }


#: side -> scenario name -> target -> its runs, round by round
Runs = dict[str, dict[str, dict[str, list[WrkResult]]]]


def measure(
    sides: dict[str, dict[str, Target]],
    scenarios: list[Scenario],
    rounds: int,
    duration: int,
    orders: random.Random,
) -> Runs:
    """`rounds` rounds; in each, every (scenario, target) on both sides back to back, the
    side that goes first alternating by round (ABBA over two rounds)."""
    targets = list(next(iter(sides.values())))
    runs: Runs = {side: {s.name: {t: [] for t in targets} for s in scenarios} for side in sides}
    items = [(s, t) for s in scenarios for t in targets]
    for number in range(rounds):
        started = time.monotonic()
        pair = [BEFORE, AFTER] if number % 2 == 0 else [AFTER, BEFORE]
        for scenario, name in orders.sample(items, len(items)):
            for side in pair:
                target = sides[side][name]
                result = wrk(
                    name,
                    target.base + scenario.body,
                    scenario.connections,
                    duration,
                    target.token,
                    target.pid,
                )
                runs[side][scenario.name][name].append(result)
        print(
            f"round {number + 1}/{rounds} ({pair[0]} first) in {time.monotonic() - started:.0f} s,"
            f" load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return runs


def bootstrap_median(values: list[float], rng: random.Random) -> tuple[float, float]:
    """The 95% interval of the median of `values` (rounds resampled with replacement)."""
    k = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=k)) for _ in range(RESAMPLES))
    return medians[int(0.025 * RESAMPLES)], medians[int(0.975 * RESAMPLES) - 1]


def verdict(low: float, high: float) -> str:
    """Plainly, from the 95% interval of the change."""
    if low > -MOST_DROP:
        return "drop under 5%"
    return "drop over 5%" if high < -MOST_DROP else "inconclusive at 5%"


def compare_ratios(runs: Runs, scenarios: list[Scenario], seed: int) -> list[dict[str, object]]:
    """Per scenario and ratio: the median before and after, the median paired change and
    its interval."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    pairs = [(name, base) for name, base, _ in TARGET_RATIOS]
    # Each target after/before on its own, as a check on what moved (the baselines too).
    pairs += [(name, "") for name in runs[AFTER][scenarios[0].name]]
    for scenario in scenarios:
        for name, base in pairs:
            per_side = {
                side: [
                    r.requests_per_s / (b.requests_per_s if base else 1.0)
                    for r, b in zip(
                        runs[side][scenario.name][name],
                        runs[side][scenario.name][base or name],
                        strict=True,
                    )
                ]
                for side in (BEFORE, AFTER)
            }
            changes = [a / b - 1 for a, b in zip(per_side[AFTER], per_side[BEFORE], strict=True)]
            low, high = bootstrap_median(changes, rng)
            rows.append(
                {
                    "scenario": scenario.name,
                    "ratio": f"{name} / {base}" if base else f"{name} req/s",
                    "before": statistics.median(per_side[BEFORE]),
                    "after": statistics.median(per_side[AFTER]),
                    "change": statistics.median(changes),
                    "low": low,
                    "high": high,
                    "verdict": verdict(low, high) if base else "",
                }
            )
    return rows


def print_rows(rows: list[dict[str, object]]) -> None:
    print(
        f"\n{'scenario':<12} {'ratio (req/s)':<28} {'before':>8} {'after':>8} "
        f"{'change':>7} {'95% interval':>17}  verdict"
    )
    for row in rows:
        print(
            "{scenario:<12} {ratio:<28} {before:>8.3f} {after:>8.3f} {change:>+7.1%} "
            "[{low:>+6.1%}, {high:>+6.1%}]  {verdict}".format(**row)
        )


def added_p50(runs: Runs, scenario: Scenario) -> dict[str, float]:
    """The nginx plane's added median latency (ms), the median over rounds, per side."""
    by_side = runs.items()
    return {
        side: statistics.median(
            n.p50_ms - d.p50_ms
            for n, d in zip(by[scenario.name][NGINX], by[scenario.name][DIRECT], strict=True)
        )
        for side, by in by_side
    }


def compare(args: argparse.Namespace, seed: int) -> None:
    """`run.py --before REV`: see the module's docstring."""
    if args.rounds % 2:
        print(f"--rounds {args.rounds} is odd: ABBA balances the order over even rounds")
    before_root = worktree(args.before, Path(args.before_dir))
    conns = [int(c) for c in args.connections.split(",")]
    scenarios = [Scenario(SMALL, c) for c in conns] + [Scenario(LARGE, max(conns))]
    loads = [os.getloadavg()]
    print(f"before: {args.before} in {before_root}; after: {ROOT}; --seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="servicelab-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx workers run as nobody when started by root
        # The older labs first: a newer lab removes their packet-filter chain when it
        # starts, which an older one would otherwise put back meanwhile.
        with (
            checkout_targets(before_root, tmp / BEFORE) as before,
            checkout_targets(ROOT, tmp / AFTER) as after,
        ):
            sides = {BEFORE: before, AFTER: after}
            runs = measure(sides, scenarios, args.rounds, args.duration, random.Random(seed))
    loads.append(os.getloadavg())
    rows = compare_ratios(runs, scenarios, seed)
    print_rows(rows)
    one = next((s for s in scenarios if s.connections == 1), None)
    p50 = added_p50(runs, one) if one else {}
    for side, ms in p50.items():
        print(f"{NGINX} adds {ms:.3f} ms to p50 at 1 connection ({side})")
    print(f"load average at the start {loads[0][0]:.2f}, at the end {loads[1][0]:.2f}")
    out = ROOT / "bench" / "results" / f"proxy-before-after-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "before": args.before,
                "before_commit": _git("rev-parse", args.before),
                "after_commit": _git("rev-parse", "HEAD") + " + working tree",
                "seed": seed,
                "rounds": args.rounds,
                "duration_s": args.duration,
                "comparison": rows,
                "added_p50_ms_c1": p50,
                "load_average": {"start": loads[0], "end": loads[1]},
                "runs": {
                    side: {
                        sc: {t: [asdict(r) for r in rs] for t, rs in by.items()}
                        for sc, by in s.items()
                    }
                    for side, s in runs.items()
                },
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
