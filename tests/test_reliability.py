"""A lab that keeps its promises when things go wrong, on the local runtime:

- a service whose start the runtime refuses is `failed` with a reason and never keeps the
  reconcile loop from restarting the others;
- a lab killed (SIGKILL) at any moment of an update leaves exactly one instance, serving
  the spec the database holds, and delete and purge still work.

The same on Docker is in test_docker_lab.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from .labtools import LabProcess, stop_local_services, wait_until
from .test_services_api import ECHO, deploy, service, service_pids, wait_running

#: The usual deadline of the suite for a service to be back: a restart takes about a
#: second and a half on an idle machine.
BACK_WITHIN = 30.0


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_a_service_that_cannot_start_never_stalls_the_others(
    tmp_path: Path, lab_process: LabProcess
) -> None:
    data_dir = lab_process.data_dir
    vanishing_code = tmp_path / "vanishing" / "echo-service"  # service_pids looks for the name
    shutil.copytree(ECHO, vanishing_code, ignore=shutil.ignore_patterns("__pycache__"))
    blocked_logs = data_dir / "services" / "rel--blocked" / "logs"
    with lab_process.client() as api:
        assert api.post("/api/projects", json={"name": "rel"}).status_code == 201
        # Deployed first, so that they come first in the reconcile loop's order.
        deploy(api, "rel", "vanishing", str(vanishing_code))
        deploy(api, "rel", "blocked")
        deploy(api, "rel", "other")
        for name in ("vanishing", "blocked", "other"):
            wait_running(api, "rel", name)

        # Two ways a runtime refuses a start: the code is gone (a spec error), and the
        # service's folder cannot be written (an OS error inside the runtime).
        shutil.rmtree(vanishing_code)
        blocked_logs.rename(blocked_logs.with_name("logs.moved"))
        blocked_logs.write_text("a file where the runtime wants a folder")
        kill_all(service_pids(data_dir, "rel--vanishing") + service_pids(data_dir, "rel--blocked"))
        for name in ("vanishing", "blocked"):
            wait_until(
                lambda n=name: service(api, "rel", n)["restarts"] >= 2,
                timeout=BACK_WITHIN,
                what=f"{name} to have failed to start twice",
            )

        # Now the healthy service's process dies: it is restarted as when it is alone.
        [before] = service_pids(data_dir, "rel--other")
        kill_all([before])
        wait_until(
            lambda: (
                service_pids(data_dir, "rel--other") not in ([], [before])
                and service(api, "rel", "other")["status"] == "running"
            ),
            timeout=BACK_WITHIN,
            what="the other service to be restarted and running",
        )
        assert api.get("/api/projects/rel/services/other/8091/").text == "ok"

        vanishing = service(api, "rel", "vanishing")
        assert vanishing["status"] == "failed"
        assert "does not exist" in vanishing["reason"], vanishing["reason"]
        assert "retrying in" in vanishing["reason"], vanishing["reason"]
        blocked = service(api, "rel", "blocked")
        assert blocked["status"] == "failed"
        assert "Could not start service 'blocked'" in blocked["reason"], blocked["reason"]
        # One line per distinct failure in the lab's log, not a traceback per pass.
        assert lab_process.log().count("Traceback") == 0

        # The failed services can still be deleted, with their data.
        for name in ("vanishing", "blocked"):
            r = api.delete(f"/api/projects/rel/services/{name}", params={"purge": True})
            assert r.status_code == 200, r.text


def _update_in_background(lab: LabProcess, version: int) -> threading.Thread:
    def put() -> None:
        # The lab dies under this request: whatever it answers (or not) is not the point.
        try:
            with lab.client(timeout=60) as api:
                api.put(
                    "/api/projects/rel/services/flip",
                    json={"code": ECHO, "env": {"VERSION": str(version)}},
                )
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(600)  # ten lab restarts
def test_a_lab_killed_during_updates_keeps_one_consistent_instance(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    try:
        with lab.client() as api:
            api.post("/api/projects", json={"name": "rel"})
            r = api.put("/api/projects/rel/services/flip", json={"code": ECHO, "env": {}})
            assert r.status_code == 201, r.text
            wait_running(api, "rel", "flip")
        # Kill points spread over an update: before the new instance starts, while it
        # starts, while it gets healthy, around the switch, after it.
        delays = [0.05, 0.2, 0.35, 0.5, 0.7, 0.9, 1.1, 1.4, 1.8, 2.5]
        for version, delay in enumerate(delays, start=1):
            thread = _update_in_background(lab, version)
            time.sleep(delay)  # the kill point, not a wait for readiness
            lab.stop(signal.SIGKILL)
            thread.join(timeout=60)
            lab.start()
            with lab.client() as api:
                stored = wait_running(api, "rel", "flip")
                wait_until(
                    lambda: len(service_pids(data_dir, "rel--flip")) == 1,
                    timeout=BACK_WITHIN,
                    what=f"exactly one instance after kill {version} ({delay} s)",
                )
                served = api.get("/api/projects/rel/services/flip/8091/env").json()
                assert served.get("VERSION") == stored["configuration"].get("VERSION"), (
                    f"kill {version} after {delay} s: serving {served.get('VERSION')}, "
                    f"the database holds {stored['configuration'].get('VERSION')}"
                )
                assert len(service_pids(data_dir, "rel--flip")) == 1
        with lab.client() as api:
            r = api.delete("/api/projects/rel/services/flip", params={"purge": True})
            assert r.status_code == 200, r.text
            assert service_pids(data_dir, "rel--flip") == []
            assert not (data_dir / "services" / "rel--flip").exists()
    finally:
        lab.stop()
        stop_local_services(data_dir)
