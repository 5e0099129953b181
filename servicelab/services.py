"""ServiceManager: from a ServiceSpec to a running, watched, reachable service.

The database holds what should run (spec, desired state) and the runtime's handle of the
current instance. A reconcile loop compares that with what the runtime reports, restarts
failed instances with back-off, probes HTTP health when the runtime has no health check of
its own, and keeps an in-memory route table for the proxy, so the proxy's hot path never
touches the database or the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from servicelab.auth import TokenAuthority, issue_token
from servicelab.config import Settings
from servicelab.db import ApiToken, Database, Project, Service, new_id, utcnow
from servicelab.runtimes.base import (
    Address,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeStatus,
    SpecError,
)
from servicelab.spec import Phase, ServiceSpec, normalize_name

log = logging.getLogger("servicelab.services")

#: Restart back-off: 1 s, 2 s, 4 s ... up to this many seconds.
MAX_BACKOFF = 60.0
#: A service that stayed up this long has its back-off reset.
STABLE_AFTER = 60.0
#: How often a starting service is probed, so that "healthy" is seen quickly.
STARTING_PROBE_INTERVAL = 0.1
#: While a service starts, its last log line becomes its reason at most this often.
NOTE_INTERVAL = 1.0
#: Progress (image pulls) is written to the service's reason at most this often.
PROGRESS_INTERVAL = 0.5


class ServiceError(Exception):
    """An error for the API to show: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def service_path(project: str, service: str) -> str:
    """LAB_SERVICE_PATH: the route prefix to which a service appends `<port>/`."""
    return f"/api/projects/{project}/services/{service}/"


@dataclass
class Route:
    """What the proxy needs to reach one service, kept in memory."""

    project: str
    service: str
    phase: Phase
    strip_prefix: bool
    ports: tuple[int, ...]
    addresses: dict[int, Address] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class _Watch:
    """In-memory bookkeeping of one service between reconcile passes."""

    next_probe: float = 0.0
    failures: int = 0
    ever_healthy: bool = False
    started: float = field(default_factory=time.monotonic)
    next_restart: float = 0.0
    last_reason: str | None = None
    next_note: float = 0.0


class ServiceManager:
    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        authority: TokenAuthority,
        settings: Settings,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.authority = authority
        self.settings = settings
        self.routes: dict[tuple[str, str], Route] = {}
        self._watches: dict[str, _Watch] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._http: httpx.AsyncClient | None = None

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=5.0, follow_redirects=False, trust_env=False)
        await self._adopt()
        self._task = asyncio.create_task(self._loop(), name="servicelab-reconcile")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http:
            await self._http.aclose()
        await self.runtime.close()

    def _lock(self, service_id: str) -> asyncio.Lock:
        return self._locks.setdefault(service_id, asyncio.Lock())

    async def _adopt(self) -> None:
        """Pick up instances that survived a restart of the lab; stop orphans."""
        adopted = {a.key: a.handle for a in await self.runtime.adopt()}
        rows = await asyncio.to_thread(self._all_rows)
        known: set[str] = set()
        for row, project in rows:
            spec = ServiceSpec.from_dict(row.spec)
            known.add(spec.key)
            handle = adopted.get(spec.key)
            if handle is not None and row.desired == "running":
                if handle != row.handle:
                    await asyncio.to_thread(self._save, row.id, handle=handle)
                row.handle = handle
            await self._update_route(project.name, row)
        for key, handle in adopted.items():
            if key not in known:
                log.info("stopping %s: it runs but no service of this lab owns it", key)
                await self.runtime.stop(handle)

    def _all_rows(self) -> list[tuple[Service, Project]]:
        with self.db.session() as session:
            return [
                (s, p)
                for s, p in session.execute(
                    select(Service, Project).join(Project, Service.project_id == Project.id)
                ).all()
            ]

    # -- the reconcile loop -------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile pass failed")
            interval = self.settings.reconcile_interval
            if any(r.phase is Phase.STARTING for r in self.routes.values()):
                interval = min(interval, STARTING_PROBE_INTERVAL)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    def wake(self) -> None:
        self._wake.set()

    async def reconcile(self) -> None:
        rows = await asyncio.to_thread(self._all_rows)
        seen = set()
        for snapshot, project in rows:
            seen.add((project.name, snapshot.name))
            lock = self._lock(snapshot.id)
            if lock.locked():
                continue  # an API action is working on it
            async with lock:
                # Read the row again under the lock: an API action may have stopped,
                # updated or deleted the service since the snapshot, and acting on the
                # old row would restart what was stopped or start what was deleted.
                row = await asyncio.to_thread(self._get_row, snapshot.id)
                if row is not None:
                    await self._reconcile_one(row, project)
        for key in set(self.routes) - seen:
            self.routes.pop(key, None)

    async def _reconcile_one(self, row: Service, project: Project) -> None:
        spec = ServiceSpec.from_dict(row.spec)
        watch = self._watches.setdefault(row.id, _Watch())
        now = time.monotonic()
        if row.desired != "running":
            if row.phase != Phase.STOPPED.value:
                await self._set(row, phase=Phase.STOPPED, healthy=None, reason=None)
            await self._update_route(project.name, row)
            return
        if row.handle is None:
            if now >= watch.next_restart:
                await self._start_instance(row, project, spec, reason=row.reason)
            await self._update_route(project.name, row)
            return

        status = await self.runtime.status(row.handle)
        if status.phase in (Phase.FAILED, Phase.STOPPED):
            await self._on_instance_ended(row, project, spec, status, watch)
        else:
            await self._on_instance_running(row, project, spec, status, watch)
        await self._update_route(project.name, row)

    async def _on_instance_ended(
        self,
        row: Service,
        project: Project,
        spec: ServiceSpec,
        status: RuntimeStatus,
        watch: _Watch,
    ) -> None:
        reason = status.reason or "the service stopped"
        if spec.restart == "no":
            await self._set(row, phase=Phase.FAILED, healthy=False, reason=reason)
            return
        now = time.monotonic()
        if watch.last_reason != reason:
            # First time we see this failure: record it and schedule the restart.
            watch.last_reason = reason
            delay = min(MAX_BACKOFF, 2.0 ** min(row.restarts, 10))
            if now - watch.started > STABLE_AFTER and watch.ever_healthy:
                delay = 1.0
            watch.next_restart = now + delay
            log.warning("service %s/%s failed: %s", project.name, row.name, reason)
            await self._set(
                row,
                phase=Phase.FAILED,
                healthy=False,
                reason=f"{reason}; restarting in {delay:.0f} s",
            )
            return
        if now >= watch.next_restart:
            await self.runtime.stop(row.handle or {})
            await self._start_instance(row, project, spec, reason=f"restarted after: {reason}")
            await self._set(row, restarts=row.restarts + 1)

    async def _on_instance_running(
        self,
        row: Service,
        project: Project,
        spec: ServiceSpec,
        status: RuntimeStatus,
        watch: _Watch,
    ) -> None:
        now = time.monotonic()
        healthy = status.healthy
        detail = status.reason
        if healthy is None:
            if now < watch.next_probe:
                return
            healthy, detail = await self._probe(row.handle or {}, spec)
            interval = STARTING_PROBE_INTERVAL if not watch.ever_healthy else spec.health.interval
            watch.next_probe = now + interval
        if healthy:
            watch.failures = 0
            watch.ever_healthy = True
            if row.phase != Phase.RUNNING.value or row.healthy is not True:
                await self._set(row, phase=Phase.RUNNING, healthy=True, reason=None)
            return
        watch.failures += 1
        in_grace = not watch.ever_healthy and now - watch.started < spec.health.start_period
        if status.phase is Phase.STARTING or in_grace:
            if row.phase != Phase.STARTING.value:
                await self._set(row, phase=Phase.STARTING, healthy=None)
            if now >= watch.next_note:
                # Installing dependencies can take minutes: say what the service is doing.
                watch.next_note = now + NOTE_INTERVAL
                note = await self._last_log_line(row.handle or {})
                if note and note != row.reason:
                    await self._set(row, reason=note)
            return
        if watch.failures >= spec.health.retries or not watch.ever_healthy:
            reason = f"health check failing: {detail}" if detail else "health check failing"
            if row.phase != Phase.UNHEALTHY.value or row.reason != reason:
                await self._set(row, phase=Phase.UNHEALTHY, healthy=False, reason=reason)

    async def _last_log_line(self, handle: Handle) -> str | None:
        try:
            lines = [line async for line in self.runtime.logs(handle, tail=1)]
        except Exception:  # logs are a courtesy here; the status must not fail for them
            return None
        return lines[-1].strip()[:300] if lines and lines[-1].strip() else None

    async def _probe(self, handle: Handle, spec: ServiceSpec) -> tuple[bool, str | None]:
        port = spec.health.port or spec.connection_port or (spec.ports[0] if spec.ports else None)
        if port is None or spec.health.path is None:
            return True, None
        address = await self.runtime.address(handle, port)
        if address is None:
            return False, f"port {port} is not reachable"
        assert self._http is not None
        try:
            response = await self._http.get(
                address.url + spec.health.path, timeout=spec.health.timeout
            )
        except httpx.HTTPError as exc:
            return False, f"GET {spec.health.path} on port {port}: {type(exc).__name__}"
        if response.status_code >= 500:
            return False, f"GET {spec.health.path} on port {port} answered {response.status_code}"
        return True, None

    async def _start_instance(
        self,
        row: Service,
        project: Project,
        spec: ServiceSpec,
        *,
        reason: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        env = await asyncio.to_thread(self._environment, row, project, spec)
        try:
            handle = await self.runtime.start(spec, env, progress)
        except SpecError as exc:
            self._watches[row.id] = _Watch(next_restart=time.monotonic() + MAX_BACKOFF)
            await self._set(row, phase=Phase.FAILED, healthy=False, reason=str(exc), handle=None)
            return
        self._watches[row.id] = _Watch()
        await self._set(
            row,
            handle=handle,
            phase=Phase.STARTING,
            healthy=None,
            reason=reason,
            started_at=utcnow(),
        )

    def _environment(self, row: Service, project: Project, spec: ServiceSpec) -> dict[str, str]:
        """LAB_* variables, then the user's environment, which may override them.

        Each new instance gets a fresh project token (only its hash is stored, so the lab
        cannot hand out the old one again); older tokens of the service are revoked.
        """
        env, token_id = self._issue_environment(row, project, spec)
        self._revoke_tokens(row.id, keep=token_id)
        return env

    def _issue_environment(
        self, row: Service, project: Project, spec: ServiceSpec
    ) -> tuple[dict[str, str], str]:
        """The environment of a new instance and the id of its new token; older tokens of
        the service stay valid (an update revokes them only once the new one serves)."""
        with self.db.session() as session:
            issued = issue_token(
                session,
                "project",
                user_id=None,
                project_id=project.id,
                name=f"service {row.name}",
                service_id=row.id,
            )
            token_id = issued.token.id
        env = {
            "LAB_ENDPOINT": self.settings.endpoint,
            "LAB_API_TOKEN": issued.secret,
            "LAB_PROJECT": project.name,
            "LAB_SERVICE_PATH": service_path(project.name, row.name),
        }
        env.update(spec.env)
        return env, token_id

    def _revoke_tokens(
        self, service_id: str, *, keep: str | None = None, only: str | None = None
    ) -> None:
        """Revoke a service's tokens: all but `keep`, or just `only`."""
        query = update(ApiToken).where(
            ApiToken.service_id == service_id, ApiToken.revoked_at.is_(None)
        )
        if keep is not None:
            query = query.where(ApiToken.id != keep)
        if only is not None:
            query = query.where(ApiToken.id == only)
        with self.db.session() as session:
            session.execute(query.values(revoked_at=utcnow()))
        self.authority.forget()

    async def _set(self, row: Service, **values: Any) -> None:
        if "phase" in values and isinstance(values["phase"], Phase):
            values["phase"] = values["phase"].value
        for key, value in values.items():
            setattr(row, key, value)
        await asyncio.to_thread(self._save, row.id, **values)

    def _save(self, service_id: str, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(update(Service).where(Service.id == service_id).values(**values))

    async def _update_route(self, project: str, row: Service) -> None:
        """Recompute the proxy's route to a service from its row and the runtime."""
        spec = ServiceSpec.from_dict(row.spec)
        phase = Phase(row.phase)
        addresses: dict[int, Address] = {}
        if row.handle and phase is not Phase.STOPPED:
            for port in spec.ports:
                address = await self.runtime.address(row.handle, port)
                if address is not None:
                    addresses[port] = address
        self.routes[(project, row.name)] = Route(
            project=project,
            service=row.name,
            phase=phase,
            strip_prefix=spec.strip_prefix,
            ports=tuple(spec.ports),
            addresses=addresses,
            reason=row.reason,
        )

    # -- what the API calls -------------------------------------------------------------

    async def deploy(
        self,
        project: Project,
        spec: ServiceSpec,
        *,
        created_by: str | None,
        replace_existing: bool = False,
        progress: ProgressCallback | None = None,
    ) -> tuple[Service, bool]:
        """Create a service (or, with `replace_existing`, update it to `spec`).

        Returns the service and whether it was created."""
        spec = replace(
            spec, project=project.name, name=normalize_name(spec.name, what="service name")
        )
        if spec.replicas != 1:
            raise ServiceError(400, "Only replicas=1 is supported by this lab's runtime.")
        existing = await asyncio.to_thread(self._find_row, project.id, spec.name)
        if existing is not None:
            if not replace_existing:
                raise ServiceError(
                    409,
                    f"A service named {spec.name!r} already exists in project {project.name!r}: "
                    "choose another name, or update it with PUT.",
                )
            async with self._reporting(existing, progress, "updating: ") as report:
                spec = await self.runtime.prepare(spec, report)
            return await self.update(project, existing, spec, progress=progress), False
        # The row exists while the runtime prepares (an image pull can take minutes), so
        # that the service's status shows the progress; the lock keeps the reconcile loop
        # from starting it meanwhile.
        row = Service(
            id=new_id(),
            project_id=project.id,
            name=spec.name,
            spec=spec.to_dict(),
            desired="running",
            runtime=self.runtime.name,
            phase=Phase.STARTING.value,
            reason="preparing",
            created_by=created_by,
        )
        async with self._lock(row.id):
            try:
                await asyncio.to_thread(self._insert, row)
            except IntegrityError as exc:
                raise ServiceError(
                    409, f"A service named {spec.name!r} was just created in {project.name!r}."
                ) from exc
            try:
                async with self._reporting(row, progress) as report:
                    spec = await self.runtime.prepare(spec, report)
            except BaseException:
                await asyncio.to_thread(self._delete_row, row.id)
                self.routes.pop((project.name, row.name), None)
                self._locks.pop(row.id, None)
                raise
            await self._set(row, spec=spec.to_dict())
            await self._start_instance(row, project, spec, progress=progress)
            await self._update_route(project.name, row)
        self.wake()
        return row, True

    @contextlib.asynccontextmanager
    async def _reporting(
        self, row: Service, also: ProgressCallback | None, prefix: str = ""
    ) -> AsyncIterator[ProgressCallback]:
        """A progress callback that shows the latest line as the service's reason.

        Runtimes call it from worker threads and many times a second: lines are handed to
        the event loop and written at most every PROGRESS_INTERVAL seconds."""
        loop = asyncio.get_running_loop()
        latest: list[str] = []
        done = asyncio.Event()
        before = row.reason

        def report(line: str) -> None:
            if also is not None:
                also(line)
            loop.call_soon_threadsafe(latest.append, prefix + line)

        async def write() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), PROGRESS_INTERVAL)
                if latest and not done.is_set():
                    line = latest[-1]
                    latest.clear()
                    await self._set(row, reason=line)

        writer = asyncio.create_task(write())
        try:
            yield report
        finally:
            done.set()
            await writer
            if row.reason != before:
                await self._set(row, reason=before)  # the caller says what comes next

    async def update(
        self,
        project: Project,
        row: Service,
        spec: ServiceSpec,
        *,
        progress: ProgressCallback | None = None,
    ) -> Service:
        """Move a service to a new spec without downtime.

        The new instance starts beside the old one; only once it is healthy does the
        route switch to it and the old one stop. If it never becomes healthy, the old one
        keeps serving and the service's reason says why the update failed.
        """
        if spec.to_dict() == row.spec and row.desired == "running" and row.handle:
            return row  # idempotent: nothing changed
        async with self._lock(row.id):
            fresh = await asyncio.to_thread(self._get_row, row.id)
            if fresh is None:
                raise ServiceError(404, f"Service {row.name!r} was just deleted.")
            row = fresh
            old_handle = row.handle if row.desired == "running" else None
            # The old instance keeps its token until the new one serves in its place.
            env, token_id = await asyncio.to_thread(
                self._environment_for_update, row, project, spec
            )
            try:
                new_handle = await self.runtime.start(spec, env, progress)
            except BaseException:
                await asyncio.to_thread(self._revoke_tokens, row.id, only=token_id)
                raise
            healthy, detail = await self._wait_healthy(new_handle, spec)
            if not healthy:
                await self.runtime.stop(new_handle)
                await asyncio.to_thread(self._revoke_tokens, row.id, only=token_id)
                reason = f"update failed, the previous version keeps serving: {detail}"
                await self._set(row, reason=reason)
                raise ServiceError(422, reason)
            if old_handle:
                # Switch the route first, then stop the old instance.
                await self._set(row, handle=new_handle)
                await self._update_route(project.name, row)
                await self.runtime.stop(old_handle)
            await asyncio.to_thread(self._revoke_tokens, row.id, keep=token_id)
            await self._set(
                row,
                spec=spec.to_dict(),
                handle=new_handle,
                desired="running",
                phase=Phase.RUNNING,
                healthy=True,
                reason=None,
                modified_at=utcnow(),
                started_at=utcnow(),
            )
            self._watches[row.id] = _Watch(ever_healthy=True)
            await self._update_route(project.name, row)
        return row

    def _environment_for_update(
        self, row: Service, project: Project, spec: ServiceSpec
    ) -> tuple[dict[str, str], str]:
        probe = Service(id=row.id, name=row.name, spec=spec.to_dict())
        return self._issue_environment(probe, project, spec)

    async def _wait_healthy(self, handle: Handle, spec: ServiceSpec) -> tuple[bool, str | None]:
        deadline = time.monotonic() + spec.health.start_period
        detail: str | None = "it did not start"
        while time.monotonic() < deadline:
            status = await self.runtime.status(handle)
            if status.phase in (Phase.FAILED, Phase.STOPPED):
                return False, status.reason
            if status.healthy is None and status.phase is Phase.RUNNING:
                ok, detail = await self._probe(handle, spec)
            else:
                ok, detail = bool(status.healthy), status.reason
            if ok:
                return True, None
            await asyncio.sleep(STARTING_PROBE_INTERVAL)
        return False, f"not healthy after {spec.health.start_period:.0f} s ({detail})"

    def _get_row(self, service_id: str) -> Service | None:
        with self.db.session() as session:
            return session.get(Service, service_id)

    def _find_row(self, project_id: str, name: str) -> Service | None:
        with self.db.session() as session:
            return session.scalar(
                select(Service).where(Service.project_id == project_id, Service.name == name)
            )

    def _insert(self, row: Service) -> None:
        with self.db.session() as session:
            session.add(row)

    async def get(self, project: Project, name: str) -> Service:
        try:
            name = normalize_name(name, what="service name")
        except ValueError as exc:
            raise ServiceError(404, f"Service {name!r} was not found.") from exc
        row = await asyncio.to_thread(self._find_row, project.id, name)
        if row is None:
            raise ServiceError(404, f"Service {name!r} was not found in project {project.name!r}.")
        return row

    async def list_services(self, project: Project) -> list[Service]:
        def rows() -> list[Service]:
            with self.db.session() as session:
                return list(
                    session.scalars(
                        select(Service)
                        .where(Service.project_id == project.id)
                        .order_by(Service.name)
                    )
                )

        return await asyncio.to_thread(rows)

    @contextlib.asynccontextmanager
    async def _locked(self, project: Project, name: str) -> AsyncIterator[Service]:
        """The service's row, read again once its lock is held: the reconcile loop may
        have restarted it (a new handle) while the caller waited."""
        found = await self.get(project, name)
        async with self._lock(found.id):
            row = await asyncio.to_thread(self._get_row, found.id)
            if row is None:
                raise ServiceError(404, f"Service {name!r} was just deleted.")
            yield row

    async def stop(self, project: Project, name: str) -> Service:
        async with self._locked(project, name) as row:
            if row.handle:
                await self.runtime.stop(row.handle)
            await self._set(row, desired="stopped", phase=Phase.STOPPED, healthy=None, reason=None)
            await self._update_route(project.name, row)
        return row

    async def start_service(self, project: Project, name: str) -> Service:
        async with self._locked(project, name) as row:
            if row.desired == "running" and row.phase != Phase.FAILED.value:
                return row
            spec = ServiceSpec.from_dict(row.spec)
            await self._set(row, desired="running")
            if row.handle:
                await self.runtime.stop(row.handle)
            await self._start_instance(row, project, spec)
            await self._update_route(project.name, row)
        self.wake()
        return row

    async def restart(self, project: Project, name: str) -> Service:
        async with self._locked(project, name) as row:
            spec = ServiceSpec.from_dict(row.spec)
            if row.handle:
                await self.runtime.stop(row.handle)
            await self._set(row, desired="running")
            await self._start_instance(row, project, spec)
            await self._update_route(project.name, row)
        self.wake()
        return row

    async def delete(self, project: Project, name: str, *, purge: bool = False) -> None:
        async with self._locked(project, name) as row:
            if row.handle:
                await self.runtime.stop(row.handle)
            spec = ServiceSpec.from_dict(row.spec)
            if purge:
                await self.runtime.delete_data(spec)
            await asyncio.to_thread(self._delete_row, row.id)
            self.authority.forget()
            self.routes.pop((project.name, row.name), None)
            self._watches.pop(row.id, None)
        self._locks.pop(row.id, None)

    def _delete_row(self, service_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.service_id == service_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = session.get(Service, service_id)
            if row is not None:
                session.delete(row)

    async def delete_project(self, project_name: str) -> None:
        """Remove every service of a project, with its data (the project goes away)."""

        def find() -> Project | None:
            with self.db.session() as session:
                return session.scalar(select(Project).where(Project.name == project_name))

        project = await asyncio.to_thread(find)
        if project is None:
            return
        for row in await self.list_services(project):
            await self.delete(project, row.name, purge=True)

    def logs(
        self,
        row: Service,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        if not row.handle:
            return _empty()
        return self.runtime.logs(row.handle, tail=tail, since=since, follow=follow)

    async def kept_data(self, project: Project) -> list[str]:
        prefix = f"{project.name}--"
        live = {f"{project.name}--{row.name}" for row in await self.list_services(project)}
        return sorted(
            key[len(prefix) :]
            for key in await self.runtime.kept_data()
            if key.startswith(prefix) and key not in live
        )

    async def purge_kept_data(self, project: Project, service: str) -> None:
        await self.runtime.delete_data(ServiceSpec(project=project.name, name=service))


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover
