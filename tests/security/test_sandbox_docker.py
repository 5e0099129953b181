"""The same hostile code as a member's code service on Docker: host code is copied into its
container, which runs hardened (an unprivileged user, a read-only root file system, no
capabilities, no-new-privileges), and it reaches neither the lab nor another project's
container: every attack class is refused, as on the sandboxed local runtime (issue 12)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ..dockertools import LABEL_INSTANCE, remove_everything_of
from ..labtools import LabProcess
from .attack import SERVICES, hostile_gets_nothing, lab_targets, set_up_victim

pytestmark = pytest.mark.docker

RUNTIME_IMAGE = "servicelab/runtime:test"
#: The runtime image's `service` user (images/runtime/Dockerfile).
SERVICE_UID = 10001


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
        remove_everything_of(docker_engine, instance_id)


def test_hostile_code_on_docker_gets_nothing_and_still_serves(
    lab: LabProcess, docker_engine: Any
) -> None:
    victim = set_up_victim(lab)
    (container,) = [
        c
        for c in docker_engine.containers.list(filters={"label": "servicelab.key=victim--vault"})
        if c.labels.get(LABEL_INSTANCE) == lab.env["SERVICELAB_INSTANCE_ID"]
    ]
    networks = container.attrs["NetworkSettings"]["Networks"]
    victim_ip = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
    targets = lab_targets(lab, victim) | {
        "other_service_data": "/var/lib/docker/volumes",
        "other_service_dir": str(lab.data_dir / "services"),
        "other_pid": container.attrs["State"]["Pid"],
        "other_address": f"{victim_ip}:8091",
    }

    report = hostile_gets_nothing(lab, targets)

    assert report["controls"]["uid"] == SERVICE_UID
