"""Pick the runtime a lab runs its services on: a name in the entry-point group
`servicelab.runtimes`, built from the lab's settings by the runtime itself."""

from __future__ import annotations

import asyncio
import logging

from servicelab.config import Settings
from servicelab.registry import RUNTIMES
from servicelab.runtimes.base import Runtime

log = logging.getLogger("servicelab.runtimes")


def docker_answers() -> bool:
    """Whether a Docker-compatible engine answers at DOCKER_HOST (within 2 s)."""
    from servicelab.runtimes.docker_engine import DockerEngine  # the SDK, when asked only

    return asyncio.run(DockerEngine.available(2.0))


def make_runtime(settings: Settings) -> Runtime:
    """With `auto`, Docker when an engine answers, else local processes; otherwise the
    runtime of that name (`local`, `docker`, `kubernetes`, or one another package
    declares). An unknown name raises `registry.UnknownImplementation`, which lists the
    known ones; a runtime that cannot start raises `RuntimeUnavailable`."""
    choice = settings.runtime
    if choice == "auto":
        choice = "docker" if docker_answers() else "local"
        log.info("runtime: %s (SERVICELAB_RUNTIME=auto)", choice)
    # The contract is abstract on purpose: `load` only checks subclasses against it.
    runtime_class = RUNTIMES.load(choice, Runtime)  # type: ignore[type-abstract]
    return runtime_class.from_settings(settings)
