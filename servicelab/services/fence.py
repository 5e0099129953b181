"""The fence: a lab process starts, stops or deletes instances only while it leads.

Every runtime call that changes what runs goes through `FencedRuntime`, which refuses
it unless the process is the leader at that moment (`Leadership.is_leader`, a local
lease a few seconds long that only the database lock's heartbeat extends). Reading calls
(status, address, logs, kept data) pass: any replica may show a service or proxy to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from servicelab.runtimes.base import (
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeStatus,
    RuntimeUnavailable,
)
from servicelab.runtimes.usage import Usage
from servicelab.spec import ServiceSpec


class NotLeader(RuntimeUnavailable):
    """This process was about to change what runs without being the leader."""


class FencedRuntime(Runtime):
    def __init__(self, runtime: Runtime, is_leader: Callable[[], bool]) -> None:
        self.inner = runtime
        self.name = runtime.name  # type: ignore[misc]
        self.supports_images = runtime.supports_images  # type: ignore[misc]
        self.supports_replicas = runtime.supports_replicas  # type: ignore[misc]
        self._is_leader = is_leader

    def __getattr__(self, name: str) -> object:
        # What the fence does not wrap is the runtime's own to say: its isolation
        # (`isolates_code`, `isolation_note`, read by the deploy policy) above all.
        return getattr(self.inner, name)

    def _check(self, what: str) -> None:
        if not self._is_leader():
            raise NotLeader(
                f"This lab process is not the leader and may not {what} instances: "
                "try again, another lab process runs the command."
            )

    # -- what changes what runs: the leader only ------------------------------------------

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        self._check("start")
        return await self.inner.start(spec, env, progress)

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        self._check("stop")
        await self.inner.stop(handle, timeout=timeout)

    async def delete_data(self, spec: ServiceSpec) -> None:
        self._check("delete the data of")
        await self.inner.delete_data(spec)

    # -- reading: any process ---------------------------------------------------------------

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        return await self.inner.prepare(spec, progress)

    async def status(self, handle: Handle) -> RuntimeStatus:
        return await self.inner.status(handle)

    async def address(self, handle: Handle, port: int) -> Address | None:
        return await self.inner.address(handle, port)

    def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        return self.inner.logs(handle, tail=tail, since=since, follow=follow)

    async def adopt(self) -> list[AdoptedInstance]:
        return await self.inner.adopt()

    def instance_key(self, handle: Handle) -> str:
        return self.inner.instance_key(handle)

    async def usage(self, handle: Handle) -> Usage | None:
        return await self.inner.usage(handle)

    async def kept_data(self) -> list[str]:
        return await self.inner.kept_data()

    async def close(self) -> None:
        await self.inner.close()
