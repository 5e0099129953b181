"""A member's hostile code on the sandboxed local runtime gets nothing of the lab or of
another project, and still serves through the proxy (issue 12)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..labtools import LabProcess, stop_local_services
from .attack import (
    SECRET_DATA,
    SERVICES,
    hostile_gets_nothing,
    lab_targets,
    proxied,
    set_up_victim,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("sandbox-lab") / "data"
    data_dir.mkdir()
    env = {
        "SERVICELAB_RUNTIME": "local",
        # No sandbox is a failure here, not a quiet fallback.
        "SERVICELAB_LOCAL_SANDBOX": "required",
        # Members may deploy the test services from the checkout.
        "SERVICELAB_CODE_ROOTS": str(SERVICES),
        # A package-index setting of the lab's, as an operator's credentials would be.
        "UV_NO_PROGRESS": "1",
    }
    process = LabProcess(data_dir, env=env).start()
    try:
        yield process
    finally:
        process.stop()
        stop_local_services(data_dir)


def instance_state(data_dir: Path, key: str) -> dict:
    states = [
        json.loads(p.read_text())
        for p in (data_dir / "services" / key).glob("instances/*/state.json")
    ]
    running = [s for s in states if s["status"] == "running"]
    assert len(running) == 1, states
    return running[0]


def pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_hostile_code_gets_nothing_and_still_serves(lab: LabProcess) -> None:
    data_dir = lab.data_dir
    victim = set_up_victim(lab)
    state = instance_state(data_dir, "victim--vault")
    victim_uid = state["handle"]["uid"]
    # The address of the victim's own network namespace (sandbox_netns), its port.
    victim_host, victim_port = state["address"], state["handle"]["ports"]["8091"]
    victim_pids = pids_of_uid(victim_uid)
    value_file = data_dir / "services" / "victim--vault" / "data" / "value.txt"
    targets = lab_targets(lab, victim) | {
        "other_service_data": str(value_file),
        "other_service_dir": str(value_file.parent),
        "other_pid": victim_pids[0],
        "other_address": f"{victim_host}:{victim_port}",
    }
    # The targets are real: they exist, hold what an attacker wants, and the lab (this
    # test's uid) reaches the victim's port directly.
    for key in ("database", "secret_key", "other_project_file"):
        assert Path(targets[key]).is_file(), key
    assert value_file.read_text() == SECRET_DATA
    with socket.create_connection((victim_host, victim_port), timeout=5):
        pass
    assert victim_uid not in (0, os.getuid())

    report = hostile_gets_nothing(lab, targets)

    uid = report["controls"]["uid"]
    assert uid not in (0, os.getuid(), victim_uid)
    assert value_file.read_text() == SECRET_DATA


def test_the_proxy_still_reaches_sandboxed_services_fast(lab: LabProcess) -> None:
    """Loopback from the lab is unchanged: many requests in a row all answer."""
    with lab.client() as api:
        answers = [proxied(api, "victim", "vault").status_code for _ in range(50)]
    assert answers == [200] * 50


def test_the_services_own_view(lab: LabProcess) -> None:
    """What the sandboxed echo service itself reports: /data, its own uid, no lab secrets."""
    with lab.client() as api:
        env = proxied(api, "victim", "vault", "env").json()
    assert env["LAB_DATA_DIR"] == "/data"
    assert env["HOME"] == "/tmp"
    assert not any(k.startswith("SERVICELAB_") for k in env)
    # The lab's package-index settings (UV_NO_PROGRESS here; credentials, often) go to the
    # install step only: the running service does not get them (issue 26).
    assert not any(k.startswith(("UV_", "PIP_")) for k in env), sorted(env)
    with httpx.Client(timeout=10) as client:
        state = instance_state(lab.data_dir, "victim--vault")
        port = state["handle"]["ports"]["8091"]
        # The lab reaches it at its own network's address; the host's loopback has nothing.
        assert client.get(f"http://{state['address']}:{port}/").text == "ok"
