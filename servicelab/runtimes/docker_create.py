"""Creating a service's container, with what engines do at the edges of a start."""

from __future__ import annotations

from typing import Any

import docker.errors

from servicelab.runtimes.base import SpecError
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_networks import ProjectNetworks
from servicelab.runtimes.docker_rules import explain, start_error
from servicelab.spec import ServiceSpec


async def create_container(
    engine: DockerEngine,
    networks: ProjectNetworks,
    spec: ServiceSpec,
    image: str,
    options: dict[str, Any],
) -> Any:
    """Create the container on the project's network (`options["network"]`; the caller
    holds the project's network lock). Errors are the contract's, with messages for users."""
    client = await engine.client()
    try:
        try:
            return await engine.call(client.containers.create, image, **options)
        except docker.errors.NotFound as exc:
            if "network" not in explain(exc).lower():
                raise
            # Another lab on this engine removed the project's network just now.
            await networks.ensure(spec.project)
            return await engine.call(client.containers.create, image, **options)
    except docker.errors.ImageNotFound:
        raise SpecError(
            f"Image {image} not found on the Docker engine (removed since it was "
            "checked?): deploy again to pull it."
        ) from None
    except docker.errors.APIError as exc:
        raise start_error(exc, spec) from exc


async def exited_at_once(engine: DockerEngine, container: Any, exc: docker.errors.APIError) -> bool:
    """Podman's start fails with "open /proc/<pid>/cgroup: no such process" when the
    command exited before Podman read its cgroup: the container did start and ended,
    and its exit code is the service's to report, as on Docker."""
    if "no such process" not in explain(exc).lower():
        return False
    try:
        await engine.call(container.reload)
    except docker.errors.APIError:
        return False
    return container.status in ("exited", "stopped", "dead")
