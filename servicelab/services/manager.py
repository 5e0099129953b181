"""ServiceManager: the commands the API, CLI and UI give (deploy, update, stop, delete...).

It wires the parts together: the store (rows), the route table the proxy reads, the
health prober, and the reconcile loop that keeps what runs matching the rows. A lock per
service keeps a command and the reconcile loop from acting on one service at once.

Several lab processes may share one database (docs/replicas.md): only the leader
reconciles and starts or stops instances (its runtime is fenced, `fence.py`). A command
given to another process goes to the leader through the database (`commands.py`) and
comes back as the same result or error: each command is a dataclass
(`command_types.py`), run on the leader by `dispatch.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from servicelab.auth import TokenAuthority
from servicelab.config import Settings
from servicelab.db import Database, Project
from servicelab.errors import Conflict, Invalid, NotFound
from servicelab.runtimes.base import ProgressCallback, Runtime
from servicelab.spec import InvalidName, Phase, ServiceSpec, normalize, normalize_name

from .command_types import (
    Command,
    Delete,
    DeleteProject,
    Deploy,
    PurgeKeptData,
    Restart,
    Start,
    Stop,
)
from .commands import CommandQueue
from .fence import FencedRuntime
from .health import Prober
from .leader import Leadership, SoloLeadership
from .progress import reporting
from .quota import check_service_quota
from .reconcile import Reconciler
from .replica import Replica
from .rollout import roll_out
from .routes import RouteTable
from .store import ServiceRow, ServiceStore


class ServiceManager:
    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        authority: TokenAuthority,
        settings: Settings,
        leadership: Leadership | None = None,
    ) -> None:
        self.db = db
        self.leadership: Leadership = leadership or SoloLeadership()
        self.runtime: Runtime = FencedRuntime(runtime, lambda: self.leadership.is_leader)
        runtime = self.runtime
        self.authority = authority
        self.settings = settings
        self.store = ServiceStore(db)
        self.routes = RouteTable(runtime)
        self.prober = Prober(runtime)
        self._locks: dict[str, asyncio.Lock] = {}
        self.reconciler = Reconciler(
            self.store,
            runtime,
            self.routes,
            self.prober,
            settings,
            lock=self._lock,
            tokens_changed=authority.forget,
        )
        self.commands = CommandQueue(db)
        self.replica = Replica(self)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the other lab processes; adopt and reconcile once leading (at once on
        SQLite, where this process is the only one)."""
        await self.prober.start()
        await self.replica.start()

    async def close(self) -> None:
        await self.replica.close()
        await self.prober.close()
        await self.runtime.close()

    @property
    def here(self) -> bool:
        """Whether commands run in this process (the leader) or go to the leader."""
        return self.leadership.is_leader

    async def _on_leader(self, command: Command) -> dict[str, Any]:
        """Have the leader run `command` (`dispatch.py`), as it would have run here: its
        result, or its domain error raised here. Every command given while this process
        does not lead goes this way."""
        return await self.commands.call(command)

    async def _service_on_leader(
        self, command: Command, name: str
    ) -> tuple[ServiceRow, dict[str, Any]]:
        """`_on_leader` for a command about one service: its row afterwards, and the
        command's result."""
        result = await self._on_leader(command)
        row = await self.store.get(str(result.get("id")))
        if row is None:
            raise NotFound(f"Service {name!r} was just deleted.")
        return row, result

    def _lock(self, service_id: str) -> asyncio.Lock:
        return self._locks.setdefault(service_id, asyncio.Lock())

    def wake(self) -> None:
        self.reconciler.wake()

    async def reconcile(self) -> None:
        await self.reconciler.reconcile()

    # -- deploy and update ----------------------------------------------------------------

    async def deploy(
        self,
        project: Project,
        spec: ServiceSpec,
        *,
        created_by: str | None,
        replace_existing: bool = False,
        progress: ProgressCallback | None = None,
    ) -> tuple[ServiceRow, bool]:
        """Create a service (or, with `replace_existing`, update it to `spec`).

        Returns the service and whether it was created."""
        if not self.here:
            command = Deploy(project.name, spec, created_by, replace_existing)
            row, result = await self._service_on_leader(command, spec.name)
            return row, bool(result["created"])
        spec = normalize(replace(spec, project=project.name))
        if spec.replicas != 1 and not self.runtime.supports_replicas:
            raise Invalid("Only replicas=1 is supported by this lab's runtime.")
        existing = await self.store.find(project.id, spec.name)
        if existing is not None:
            if not replace_existing:
                raise Conflict(
                    f"A service named {spec.name!r} already exists in project {project.name!r}: "
                    "choose another name, or update it with PUT."
                )
            async with reporting(self.store, existing, progress, "updating: ") as report:
                spec = await self.runtime.prepare(spec, report)
            return await self.update(project, existing, spec, progress=progress), False
        # The row exists while the runtime prepares (an image pull can take minutes), so
        # that the service's status shows the progress; the lock keeps the reconcile loop
        # from starting it meanwhile.
        async with self._lock(f"quota {project.id}"):
            await check_service_quota(self.store, project, self.settings.project_max_services)
            row = await self.store.insert(
                project, spec, runtime=self.runtime.name, created_by=created_by
            )
        async with self._lock(row.id):
            try:
                async with reporting(self.store, row, progress) as report:
                    spec = await self.runtime.prepare(spec, report)
            except BaseException:
                await self.store.delete(row.id)
                self.routes.drop(project.name, row.name)
                self._locks.pop(row.id, None)
                raise
            await self.store.save(row, spec=spec)
            await self.reconciler.start_instance(row, progress=progress)
            await self.routes.refresh(row)
        self.wake()
        return row, True

    async def update(
        self,
        project: Project,
        row: ServiceRow,
        spec: ServiceSpec,
        *,
        progress: ProgressCallback | None = None,
    ) -> ServiceRow:
        """Move a service to a new spec without downtime (see `rollout.py`)."""
        if spec == row.spec and row.desired == "running" and row.handle:
            return row  # idempotent: nothing changed
        async with self._lock(row.id):
            return await roll_out(self, row, spec, progress)

    # -- reading --------------------------------------------------------------------------

    async def get(self, project: Project, name: str) -> ServiceRow:
        try:
            name = normalize_name(name, what="service name")
        except InvalidName as exc:
            raise NotFound(f"Service {name!r} was not found.") from exc
        row = await self.store.find(project.id, name)
        if row is None:
            raise NotFound(f"Service {name!r} was not found in project {project.name!r}.")
        return row

    async def list_services(self, project: Project) -> list[ServiceRow]:
        return await self.store.of_project(project.id)

    def logs(
        self,
        row: ServiceRow,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        if not row.handle:
            return _empty()
        return self.runtime.logs(row.handle, tail=tail, since=since, follow=follow)

    # -- stop, start, restart, delete -----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, project: Project, name: str) -> AsyncIterator[ServiceRow]:
        """The service's row, read again once its lock is held: the reconcile loop may
        have restarted it (a new handle) while the caller waited."""
        found = await self.get(project, name)
        async with self._lock(found.id):
            row = await self.store.get(found.id)
            if row is None:
                raise NotFound(f"Service {name!r} was just deleted.")
            yield row

    async def stop(self, project: Project, name: str) -> ServiceRow:
        if not self.here:
            return (await self._service_on_leader(Stop(project.name, name), name))[0]
        async with self._locked(project, name) as row:
            if row.handle:
                await self.runtime.stop(row.handle)
            await self.store.save(
                row, desired="stopped", phase=Phase.STOPPED, healthy=None, reason=None
            )
            # Nothing runs to hold the token: a copy of it must not outlive the instance
            # (a start gives the next instance a new one).
            await self.store.revoke_tokens(row.id)
            self.authority.forget()
            await self.routes.refresh(row)
        return row

    async def start_service(self, project: Project, name: str) -> ServiceRow:
        if not self.here:
            return (await self._service_on_leader(Start(project.name, name), name))[0]
        async with self._locked(project, name) as row:
            if row.desired == "running" and row.phase is not Phase.FAILED:
                return row
            await self._replace_instance(row)
        self.wake()
        return row

    async def restart(self, project: Project, name: str) -> ServiceRow:
        if not self.here:
            return (await self._service_on_leader(Restart(project.name, name), name))[0]
        async with self._locked(project, name) as row:
            await self._replace_instance(row)
        self.wake()
        return row

    async def _replace_instance(self, row: ServiceRow) -> None:
        """Stop the instance, revoke its token, start a new one with a new token. The old
        token goes before the start, not after it: a start that fails (and is retried
        later) must not leave it valid. A restart is how a service's token is renewed."""
        if row.handle:
            await self.runtime.stop(row.handle)
        await self.store.save(row, desired="running", handle=None)
        await self.store.revoke_tokens(row.id)
        self.authority.forget()
        await self.reconciler.start_instance(row)
        await self.routes.refresh(row)

    async def delete(self, project: Project, name: str, *, purge: bool = False) -> None:
        if not self.here:
            await self._on_leader(Delete(project.name, name, purge))
            return
        async with self._locked(project, name) as row:
            if row.handle:
                await self.runtime.stop(row.handle)
            if purge:
                await self.runtime.delete_data(row.spec)
            await self.store.delete(row.id)
            self.authority.forget()
            self.routes.drop(project.name, row.name)
            self.reconciler.watches.pop(row.id, None)
        self._locks.pop(row.id, None)

    async def delete_project(self, project_name: str) -> None:
        """Remove every service of a project, with its data (the project goes away)."""
        project = await self.store.find_project(project_name)
        if project is None:
            return
        if not self.here:
            await self._on_leader(DeleteProject(project_name))
            return
        for row in await self.list_services(project):
            await self.delete(project, row.name, purge=True)

    # -- kept data ------------------------------------------------------------------------

    async def kept_data(self, project: Project) -> list[str]:
        prefix = f"{project.name}--"
        live = {f"{project.name}--{row.name}" for row in await self.list_services(project)}
        return sorted(
            key[len(prefix) :]
            for key in await self.runtime.kept_data()
            if key.startswith(prefix) and key not in live
        )

    async def purge_kept_data(self, project: Project, service: str) -> None:
        if not self.here:
            await self._on_leader(PurgeKeptData(project.name, service))
            return
        await self.runtime.delete_data(ServiceSpec(project=project.name, name=service))


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover
