"""48 wrong log-ins at once against a fresh lab (this tree, `servicelab serve`).

Prints, for a storm on one known user and one on 48 unknown names: the statuses, the
password hashes the lab computed, the growth of its peak memory (VmHWM) and the longest
wait of 4 API calls made during the storm. Also the median log-in time of a known and an
unknown user (the enumeration that equal hashing work prevents). Asserts nothing.

    .venv/bin/python bench/login_storm.py
"""

from __future__ import annotations

import collections
import concurrent.futures
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.labtools import LabProcess  # noqa: E402

STORM = 48
PASSWORD = "password-123"


def peak_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def hashes(lab: LabProcess) -> int:
    text = httpx.get(f"{lab.url}/metrics", headers={"Authorization": f"Bearer {lab.admin_token}"})
    found = re.search(r"^servicelab_password_hashes_total (\S+)$", text.text, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


def storm(lab: LabProcess, users: list[str]) -> None:
    assert lab.process is not None
    url = f"{lab.url}/api/auth/login"
    waits: list[float] = []

    def api_call() -> int:
        started = time.perf_counter()
        r = httpx.get(
            f"{lab.url}/api/projects",
            headers={"Authorization": f"Bearer {lab.admin_token}"},
            timeout=120,
        )
        waits.append(time.perf_counter() - started)
        return r.status_code

    before_peak, before_hashes = peak_mib(lab.process.pid), hashes(lab)
    with concurrent.futures.ThreadPoolExecutor(STORM + 4) as pool:
        logins = [pool.submit(httpx.get, url, auth=(u, "x" * 12), timeout=120) for u in users]
        others = [pool.submit(api_call) for _ in range(4)]
        statuses = collections.Counter(f.result().status_code for f in logins)
        api = [f.result() for f in others]
    print(
        f"  statuses {dict(statuses)}, hashes {hashes(lab) - before_hashes}, "
        f"peak memory +{peak_mib(lab.process.pid) - before_peak} MiB "
        f"({before_peak} MiB before), API calls {api} waited at most {max(waits):.2f} s"
    )


def main() -> None:
    for kind in ("known", "unknown"):
        data_dir = Path(tempfile.mkdtemp(prefix="login-storm-")) / "data"
        lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
        try:
            with lab.client() as api:
                api.post("/api/auth/users", json={"username": "alice", "password": PASSWORD})
            if kind == "known":
                times: dict[str, list[float]] = {"known": [], "unknown": []}
                for n in range(4):
                    for who, user in (("known", "alice"), ("unknown", f"nobody{n}")):
                        started = time.perf_counter()
                        httpx.get(f"{lab.url}/api/auth/login", auth=(user, "wrong-password"))
                        times[who].append(time.perf_counter() - started)
                medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
                print(
                    f"log-in medians: known user {medians['known']:.0f} ms, "
                    f"unknown user {medians['unknown']:.0f} ms"
                )
            users = ["alice"] * STORM if kind == "known" else [f"guess{n}" for n in range(STORM)]
            print(f"{STORM} wrong log-ins at once, {kind} user(s):")
            storm(lab, users)
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
