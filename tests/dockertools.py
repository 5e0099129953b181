"""What the Docker tests share: the engine set up once, and images built from strings."""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
from typing import Any

import pytest

from .labtools import ROOT

LABEL_INSTANCE = "servicelab.instance"


def set_up_engine() -> Any:
    """Start the engine and build servicelab's images (idempotent), then a client for it."""
    import docker

    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-docker.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/setup-docker.sh failed:\n{result.stdout}\n{result.stderr}")
    return docker.from_env(timeout=120)


def build_image(client: Any, tag: str, files: dict[str, bytes]) -> None:
    """Build `tag` from a context given as file name -> content (a `Dockerfile` among them)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True)


def remove_everything_of(client: Any, instance_id: str) -> None:
    """Remove a lab's containers (with their anonymous volumes), then its volumes and
    networks: what carries its `servicelab.instance` label."""
    import docker

    label = {"label": f"{LABEL_INSTANCE}={instance_id}"}
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    for network in client.networks.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
