"""Pick the runtime a lab runs its services on."""

from __future__ import annotations

import asyncio
import logging

from servicelab.config import Settings
from servicelab.runtimes.base import Runtime, RuntimeUnavailable
from servicelab.runtimes.limits import Limits
from servicelab.runtimes.sandbox_net import ServiceNetwork

log = logging.getLogger("servicelab.runtimes")


def docker_answers() -> bool:
    from servicelab.runtimes.docker import DockerRuntime

    return asyncio.run(DockerRuntime.available(timeout=2.0))


def make_runtime(settings: Settings) -> Runtime:
    """`local`, `docker`, `kubernetes`, or with `auto` Docker when an engine answers,
    else local processes."""
    choice = settings.runtime
    if choice == "auto":
        choice = "docker" if docker_answers() else "local"
        log.info("runtime: %s (SERVICELAB_RUNTIME=auto)", choice)
    if choice == "kubernetes":
        from servicelab.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    if choice == "docker":
        from servicelab.runtimes.docker import DockerRuntime
        from servicelab.runtimes.docker_egress import ensure_egress_rules, local_engine

        if settings.runtime == "docker" and not docker_answers():
            raise RuntimeUnavailable(
                "SERVICELAB_RUNTIME=docker, but no Docker engine answers at DOCKER_HOST: "
                "start one, or use SERVICELAB_RUNTIME=local."
            )
        ensure_egress_rules(service_network(settings).egress, settings.endpoint, local_engine())
        return DockerRuntime(
            settings.instance_id,
            lab_in_container=settings.lab_in_container,
            runtime_image=settings.runtime_image,
            limits=Limits.from_settings(settings),
        )
    from servicelab.runtimes.local import LocalRuntime

    return LocalRuntime(
        settings.data_dir.resolve() / "services",
        settings.instance_id,
        uv_cache_dir=settings.uv_cache_dir or settings.data_dir.resolve() / "cache" / "uv",
        sandbox=settings.local_sandbox,
        limits=Limits.from_settings(settings),
        network=service_network(settings),
    )


def service_network(settings: Settings) -> ServiceNetwork:
    try:
        return ServiceNetwork.parse(settings.service_network, settings.service_egress)
    except ValueError as exc:
        raise RuntimeUnavailable(str(exc)) from None
