"""Model services on the Docker runtime: the same tests as tests/test_models.py (every
format through the proxy, and bad model files), with a lab whose services run in the
runtime image (`servicelab/runtime:test`). Updating a model is the ServiceManager's
zero-downtime update, the same on every runtime: tests/test_models.py covers it.

Containers fetch the model from the lab, so the lab listens on all interfaces and tells
services to reach it at the Docker bridge's gateway (its LAB_ENDPOINT). Each model
service installs its framework with uv into a folder of its /data: the container's
environment is read-only (a hardened code service).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .labtools import LabProcess
from .test_models import (  # noqa: F401 - fixtures and tests, run again here on Docker
    FORMATS,
    PROJECT,
    deployed,
    project_token,
    test_bad_model_files,
    test_predictions_through_the_proxy,
    trained,
)

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

RUNTIME_IMAGE = "servicelab/runtime:test"
LABEL_INSTANCE = "servicelab.instance"


def gateway(engine: Any) -> str:
    """The host's address on Docker's default bridge: containers reach the lab there."""
    for config in engine.networks.get("bridge").attrs["IPAM"]["Config"]:
        if config.get("Gateway") and ":" not in config["Gateway"]:
            return str(config["Gateway"])
        if config.get("Subnet") and ":" not in config["Subnet"]:
            return str(ipaddress.ip_network(config["Subnet"])[1])  # the engine's default
    raise AssertionError("Docker's bridge network has no IPv4 subnet")


@pytest.fixture(scope="module")
def formats() -> list[str]:
    """The main formats; LightGBM and skops load the same way and run on local only."""
    return FORMATS


@pytest.fixture(scope="module")
def lab(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    instance_id = f"modeltest-{secrets.token_hex(4)}"
    data_dir = tmp_path_factory.mktemp("models-docker-lab") / "data"
    data_dir.mkdir()
    process = LabProcess(data_dir)
    process.env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
        "SERVICELAB_HOST": "0.0.0.0",
        "SERVICELAB_PUBLIC_URL": f"http://{gateway(docker_engine)}:{process.port}",
    }
    process.start()
    try:
        with process.client() as api:
            assert api.post("/api/projects", json={"name": PROJECT}).status_code == 201
        yield process
    finally:
        process.stop()
        label = {"label": f"{LABEL_INSTANCE}={instance_id}"}
        for container in docker_engine.containers.list(all=True, filters=label):
            container.remove(force=True)
        for volume in docker_engine.volumes.list(filters=label):
            volume.remove(force=True)
        for network in docker_engine.networks.list(filters=label):
            network.remove()
