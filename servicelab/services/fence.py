"""The fence: a lab process starts, stops or deletes instances only while it leads.

Every runtime call that changes what runs goes through `FencedRuntime`, which refuses
it unless the process is the leader at that moment (`Leadership.is_leader`, a local
lease a few seconds long that only the database lock's heartbeat extends). Reading calls
(status, address, logs, kept data) pass: any replica may show a service or proxy to it.

A start is checked twice: before, and again once the runtime returns. A leader frozen in
the middle of a start (a paused VM, SIGSTOP) whose database session was dropped meanwhile
finishes that start when it wakes, after another process took over and may have started
the same service: what it started is then removed at once, and the caller gets
`NotLeader` (it writes nothing: see `Reconciler.guarded`). The same holds when the
caller stops waiting (its task is cancelled because this process stopped leading): the
start runs to its end all the same, shielded, and what it started is removed, since no
caller will record it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

log = logging.getLogger("servicelab.fence")

#: How long closing the lab waits for starts being undone (seconds): a start is a create
#: and a start of a container or a process (image pulls happen before, in `prepare`).
UNDO_ON_CLOSE = 10.0


class NotLeader(RuntimeUnavailable):
    """This process was about to change what runs without being the leader."""


class FencedRuntime(Runtime):
    def __init__(self, runtime: Runtime, is_leader: Callable[[], bool]) -> None:
        self.inner = runtime
        self.name = runtime.name  # type: ignore[misc]
        self.supports_images = runtime.supports_images  # type: ignore[misc]
        self.supports_replicas = runtime.supports_replicas  # type: ignore[misc]
        # The runtime's isolation is its own to say (read by the deploy policy): every
        # capability of the contract is passed on by name, nothing reached by getattr.
        self.isolates_code = runtime.isolates_code
        self.isolation_note = runtime.isolation_note
        self._is_leader = is_leader
        #: Starts whose caller stopped waiting: each removes what it started, once started.
        self._undoing: set[asyncio.Task[None]] = set()

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
        starting = asyncio.ensure_future(self.inner.start(spec, env, progress))
        try:
            handle = await asyncio.shield(starting)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._undo_once_started(starting, spec))
            self._undoing.add(task)
            task.add_done_callback(self._undoing.discard)
            raise
        if not self._is_leader():
            why = "this process stopped leading while starting it"
            await asyncio.shield(self._undo(handle, spec, why))  # a cancel must not stop it
            raise NotLeader(
                f"This lab process stopped leading while it started {spec.key}: what it "
                "started is removed; the leader runs the service."
            )
        return handle

    async def _undo_once_started(self, starting: asyncio.Future[Handle], spec: ServiceSpec) -> None:
        with contextlib.suppress(Exception):
            handle = await starting
            await self._undo(handle, spec, "its start was given up")

    async def _undo(self, handle: Handle, spec: ServiceSpec, why: str) -> None:
        """Remove an instance no caller will record. Not fenced: it is this process's own
        instance, which no row names and no other process knows of."""
        log.warning("removing the instance of %s just started: %s", spec.key, why)
        try:
            await self.inner.stop(handle, timeout=0)
        except Exception:  # the next adoption removes it
            log.exception("could not remove the instance of %s just started", spec.key)

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
        if self._undoing:
            await asyncio.wait(set(self._undoing), timeout=UNDO_ON_CLOSE)
        await self.inner.close()
