"""The same hostile code as a member's code service on Docker: host code is copied into its
container, and it reaches neither the lab nor another project's container (issue 12)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ..labtools import LabProcess
from .attack import (
    ATTACK_CLASSES,
    HOSTILE,
    SECRET_DATA,
    SERVICES,
    assert_all_refused,
    member_token,
    project_file,
    proxied,
    run_hostile,
    set_up_victim,
)

pytestmark = pytest.mark.docker

RUNTIME_IMAGE = "servicelab/runtime:test"
LABEL_INSTANCE = "servicelab.instance"


@pytest.fixture(scope="module")
def lab(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    instance_id = f"sandboxtest-{secrets.token_hex(4)}"
    data_dir = tmp_path_factory.mktemp("docker-sandbox-lab") / "data"
    data_dir.mkdir()
    env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
        "SERVICELAB_CODE_ROOTS": str(SERVICES),
    }
    process = LabProcess(data_dir, env=env).start()
    try:
        yield process
    finally:
        process.stop()
        label = {"label": f"{LABEL_INSTANCE}={instance_id}"}
        for container in docker_engine.containers.list(all=True, filters=label):
            with contextlib.suppress(Exception):
                container.remove(force=True)
        for volume in docker_engine.volumes.list(filters=label):
            with contextlib.suppress(Exception):
                volume.remove(force=True)
        for network in docker_engine.networks.list(filters=label):
            with contextlib.suppress(Exception):
                network.remove()


def test_hostile_code_on_docker_gets_nothing_and_still_serves(
    lab: LabProcess, docker_engine: Any
) -> None:
    data_dir = lab.data_dir
    victim = set_up_victim(lab)
    (container,) = [
        c
        for c in docker_engine.containers.list(filters={"label": "servicelab.key=victim--vault"})
        if c.labels.get(LABEL_INSTANCE) == lab.env["SERVICELAB_INSTANCE_ID"]
    ]
    networks = container.attrs["NetworkSettings"]["Networks"]
    victim_ip = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
    targets = {
        "database": str(data_dir / "servicelab.db"),
        "secret_key": str(data_dir / "secret_key"),
        "lab_data_dir": str(data_dir),
        "other_project_file": project_file(data_dir, victim),
        "other_service_data": "/var/lib/docker/volumes",
        "other_service_dir": str(data_dir / "services"),
        "other_pid": container.attrs["State"]["Pid"],
        "other_address": f"{victim_ip}:8091",
    }
    token = member_token(lab)
    report = run_hostile(lab, token, str(HOSTILE), targets)

    # In its container the code is root and its file system is its own writable layer
    # (the runtime image installs packages there): writes "outside /data" land in that
    # layer, never in a folder of the host or of another container.
    confined = frozenset({"write_outside_data", "become_root"})
    assert_all_refused(report, ATTACK_CLASSES, allowed=confined)
    written = report["attacks"]["write_outside_data"].get("got", "")
    assert str(data_dir) not in written
    assert "/workspace/code/" in written  # a copy in the container, not the host's folder
    assert not (HOSTILE / "hostile-was-here").exists()
    with lab.client(token) as api:
        assert proxied(api, "attack", "hostile").text == "ok"
    with lab.client() as api:
        assert proxied(api, "victim", "vault", "data").text == SECRET_DATA
