"""The Runtime contract: the one narrow interface between servicelab and what runs services.

Like JupyterHub's Spawner, a runtime only starts, stops, inspects and locates things. It
knows nothing of HTTP routes, users or tokens: `ServiceManager` gives it a `ServiceSpec`
and the final environment, and persists the JSON `handle` that `start` returns, so that a
restarted lab can find its services again (`adopt`).

Restart policy and HTTP health probes are the manager's job, not the runtime's: a runtime
reports what it sees (`RuntimeStatus`), and says `healthy=None` when it has no health
check of its own (e.g. a Docker image without HEALTHCHECK).
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from servicelab.runtime_errors import RuntimeError_, RuntimeUnavailable, SpecError
from servicelab.runtimes.usage import Usage
from servicelab.spec import Phase, ServiceSpec

if TYPE_CHECKING:  # config imports nothing of runtimes, but a runtime needs no Settings to run
    from servicelab.config import Settings

__all__ = [
    "DATA_DIR_ENV",
    "Address",
    "AdoptedInstance",
    "Handle",
    "ProgressCallback",
    "Runtime",
    "RuntimeError_",
    "RuntimeStatus",
    "RuntimeUnavailable",
    "SpecError",
    "Usage",
]

#: A JSON-serialisable description of one started instance (pid, container id, ports...).
Handle = dict[str, Any]

#: Receives human-readable progress lines (image pulls, dependency installs).
ProgressCallback = Callable[[str], None]

#: The environment variable that tells a service where its persistent data folder is.
#: `/data` in containers, a folder under the lab's data directory for local processes.
DATA_DIR_ENV = "LAB_DATA_DIR"


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass
class RuntimeStatus:
    """What the runtime sees of one instance."""

    phase: Phase
    #: True/False from the runtime's own health check; None when it has none.
    healthy: bool | None = None
    #: Why the instance is failed or unhealthy, in words for users ("exited with code 3",
    #: "killed: out of memory (limit 64 MiB)", "image not found: foo:1").
    reason: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    oom_killed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdoptedInstance:
    """An instance found running when the lab starts, with the handle to reach it."""

    key: str
    handle: Handle


class Runtime(abc.ABC):
    """Runs services. One module per backend: local processes, Docker, Kubernetes.

    A backend is found by its name in the entry-point group `servicelab.runtimes`
    (`servicelab.registry.RUNTIMES`) and built with `from_settings`. What it can do is
    declared here, as attributes with defaults, so that callers read them plainly
    (`runtime.supports_images`) and a wrapper (the fence) passes each one on by name.
    """

    #: "local", "docker", "kubernetes": the name of its entry point, shown to users.
    name: ClassVar[str]

    #: Whether this runtime can run `image` specs (False: code specs only).
    supports_images: ClassVar[bool] = False
    #: Whether this runtime runs several replicas of a service (False: replicas=1 only).
    supports_replicas: ClassVar[bool] = False
    #: Whether a member's code is kept from the lab and from other services (containers
    #: do; local processes only in their sandbox). Where it is False, only admins deploy
    #: unless SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS says otherwise (api/deploy_policy.py).
    #: An instance attribute, since it may depend on the machine (the local sandbox).
    isolates_code: bool = True
    #: One line on this runtime's isolation, said at start and shown by the UI; above all
    #: why code is not isolated when `isolates_code` is False. Empty: nothing to say.
    isolation_note: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Build this runtime from the lab's settings (SERVICELAB_*): what
        `SERVICELAB_RUNTIME=<name>` calls. Raises RuntimeUnavailable when the backend
        cannot be used (no engine answers). A runtime that needs no settings keeps this
        default, which calls the class with no arguments."""
        return cls()

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        """Check a spec and complete it (ports from the image...), before anything starts.

        Raises SpecError with a message for users. Returns the completed spec.
        """
        return spec

    @abc.abstractmethod
    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        """Start one instance of `spec` with exactly `env` (plus runtime-specific keys such
        as PORT and LAB_DATA_DIR) and return its handle. Returns once the instance has
        been started, not once it is healthy."""

    @abc.abstractmethod
    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        """Stop the instance (SIGTERM, then SIGKILL after `timeout`) and release what it
        holds except its data. Stopping a stopped or vanished instance is not an error."""

    @abc.abstractmethod
    async def status(self, handle: Handle) -> RuntimeStatus:
        """The current state of an instance. A vanished instance is FAILED with a reason."""

    @abc.abstractmethod
    async def address(self, handle: Handle, port: int) -> Address | None:
        """Where the proxy reaches the service's `port`, or None if it has no such port or
        is not running."""

    @abc.abstractmethod
    def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        """Lines the instance wrote to stdout and stderr, oldest first, without newlines.
        With `follow`, keeps yielding new lines until the instance stops."""

    @abc.abstractmethod
    async def adopt(self) -> list[AdoptedInstance]:
        """Every instance of this lab found after a restart of the lab (running, or left
        behind by a lab killed while starting it);
        a service may have several (a lab killed during an update): the manager keeps one
        and stops the others."""

    def instance_key(self, handle: Handle) -> str:
        """What tells one instance from another: the same for a stored handle and the
        handle `adopt` finds for the same instance."""
        for field_name in ("container_id", "instance", "pod", "id"):
            if handle.get(field_name):
                return f"{field_name}={handle[field_name]}"
        return json.dumps(handle, sort_keys=True)

    async def usage(self, handle: Handle) -> Usage | None:
        """CPU and memory the instance uses now; None where this runtime cannot tell."""
        return None

    async def delete_data(self, spec: ServiceSpec) -> None:
        """Remove the service's persistent `/data` (a delete with purge)."""

    async def kept_data(self) -> list[str]:
        """Keys (`<project>--<service>`) of data kept from deleted services."""
        return []

    async def close(self) -> None:
        """Release clients and background tasks; running instances keep running."""
