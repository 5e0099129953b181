"""The reconcile loop: make what runs match what the rows say, one service at a time.

Each pass compares every service's row with what the runtime reports: it starts what
should run, restarts failed instances with back-off, probes HTTP health where the
runtime has no health check, and refreshes the route table. Every service is handled in
its own guard: whatever one service's runtime or row throws is recorded on that service
(status `failed`, the reason, a back-off) and the pass goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from servicelab.config import Settings
from servicelab.db import utcnow
from servicelab.runtimes.base import (
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeError_,
    RuntimeStatus,
)
from servicelab.spec import Phase, ServiceSpec

from .health import STARTING_PROBE_INTERVAL, Prober
from .routes import RouteTable, service_path, service_url_env
from .store import ServiceRow, ServiceStore

log = logging.getLogger("servicelab.services")

#: Restart back-off: 1 s, 2 s, 4 s ... up to this many seconds.
MAX_BACKOFF = 60.0
#: A service that stayed up this long has its back-off reset.
STABLE_AFTER = 60.0
#: While a service starts, its last log line becomes its reason at most this often.
NOTE_INTERVAL = 1.0


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, 2.0 ** min(attempts, 10))


@dataclass
class Watch:
    """In-memory bookkeeping of one service between reconcile passes."""

    next_probe: float = 0.0
    failures: int = 0
    ever_healthy: bool = False
    started: float = field(default_factory=time.monotonic)
    next_restart: float = 0.0
    last_reason: str | None = None
    next_note: float = 0.0
    #: The reason of the last failure, kept once the service is healthy again (its page).
    last_failure: str | None = None


class Reconciler:
    def __init__(
        self,
        store: ServiceStore,
        runtime: Runtime,
        routes: RouteTable,
        prober: Prober,
        settings: Settings,
        *,
        lock: Callable[[str], asyncio.Lock],
        tokens_changed: Callable[[], None],
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.routes = routes
        self.prober = prober
        self.settings = settings
        self._lock = lock
        self._tokens_changed = tokens_changed
        self.watches: dict[str, Watch] = {}
        self._wake = asyncio.Event()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: try again next time
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
        rows = await self.store.all()
        for snapshot in rows:
            lock = self._lock(snapshot.id)
            if lock.locked():
                continue  # an API action is working on it
            async with lock:
                # Read the row again under the lock: an API action may have stopped,
                # updated or deleted the service since the snapshot.
                row = await self.store.get(snapshot.id)
                if row is not None:
                    await self.guarded(row)
        self.routes.keep_only({row.key for row in rows})

    async def guarded(self, row: ServiceRow) -> None:
        """Reconcile one service; what goes wrong is recorded on it, never raised."""
        try:
            await self._reconcile_one(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.record_failure(row, exc)

    async def record_failure(self, row: ServiceRow, exc: Exception) -> None:
        """`failed` with the reason and a back-off; logged once per distinct reason."""
        reason = str(exc) if isinstance(exc, RuntimeError_) else f"internal error: {exc!r}"
        watch = self.watches.setdefault(row.id, Watch())
        delay = backoff(row.restarts)
        watch.next_restart = time.monotonic() + delay
        if watch.last_reason != reason:
            watch.last_reason = watch.last_failure = reason
            if isinstance(exc, RuntimeError_):
                log.warning("service %s/%s: %s", row.project, row.name, reason)
            else:
                log.exception("service %s/%s: unexpected error", row.project, row.name)
        try:
            await self.store.save(
                row,
                phase=Phase.FAILED,
                healthy=False,
                reason=f"{reason}; retrying in {delay:.0f} s",
                restarts=row.restarts + 1,
            )
        except Exception as error:  # the database is away: the next pass tries again
            log.warning("could not record the failure of %s/%s: %s", row.project, row.name, error)
        with contextlib.suppress(Exception):  # the runtime is away: the route keeps its state
            await self.routes.refresh(row)

    async def _reconcile_one(self, row: ServiceRow) -> None:
        watch = self.watches.setdefault(row.id, Watch())
        now = time.monotonic()
        if row.desired != "running":
            if row.phase is not Phase.STOPPED:
                await self.store.save(row, phase=Phase.STOPPED, healthy=None, reason=None)
        elif row.handle is None:
            if now >= watch.next_restart:
                await self.start_instance(row, reason=row.reason)
        else:
            status = await self.runtime.status(row.handle)
            if status.phase in (Phase.FAILED, Phase.STOPPED):
                await self._on_instance_ended(row, status, watch)
            else:
                await self._on_instance_running(row, status, watch)
        await self.routes.refresh(row)

    async def _on_instance_ended(
        self, row: ServiceRow, status: RuntimeStatus, watch: Watch
    ) -> None:
        reason = status.reason or "the service stopped"
        if row.spec.restart == "no":
            if row.phase is not Phase.FAILED or row.reason != reason:
                await self.store.save(row, phase=Phase.FAILED, healthy=False, reason=reason)
            return
        now = time.monotonic()
        if watch.last_reason != reason:
            # First time we see this failure: record it and schedule the restart.
            watch.last_reason = watch.last_failure = reason
            delay = backoff(row.restarts)
            if now - watch.started > STABLE_AFTER and watch.ever_healthy:
                delay = 1.0
            watch.next_restart = now + delay
            log.warning("service %s/%s failed: %s", row.project, row.name, reason)
            await self.store.save(
                row,
                phase=Phase.FAILED,
                healthy=False,
                reason=f"{reason}; restarting in {delay:.0f} s",
            )
            return
        if now >= watch.next_restart:
            await self.runtime.stop(row.handle or {})
            await self.store.save(row, handle=None, restarts=row.restarts + 1)
            await self.start_instance(row, reason=f"restarted after: {reason}")

    async def _on_instance_running(
        self, row: ServiceRow, status: RuntimeStatus, watch: Watch
    ) -> None:
        now = time.monotonic()
        healthy = status.healthy
        detail = status.reason
        if healthy is None:
            if now < watch.next_probe:
                return
            healthy, detail = await self.prober.probe(row.handle or {}, row.spec)
            interval = (
                STARTING_PROBE_INTERVAL if not watch.ever_healthy else row.spec.health.interval
            )
            watch.next_probe = now + interval
        if healthy:
            watch.failures = 0
            watch.ever_healthy = True
            watch.last_reason = None
            if row.phase is not Phase.RUNNING or row.healthy is not True:
                await self.store.save(row, phase=Phase.RUNNING, healthy=True, reason=None)
            return
        watch.failures += 1
        in_grace = not watch.ever_healthy and now - watch.started < row.spec.health.start_period
        if status.phase is Phase.STARTING or in_grace:
            if row.phase is not Phase.STARTING:
                await self.store.save(row, phase=Phase.STARTING, healthy=None)
            if status.phase is Phase.STARTING and status.reason:
                # The runtime says why the service is not up yet (Kubernetes: the
                # scheduler's message for a pod no node takes): that is the news.
                if status.reason != row.reason:
                    await self.store.save(row, reason=status.reason)
                return
            if now >= watch.next_note:
                # Installing dependencies can take minutes: say what the service is doing.
                watch.next_note = now + NOTE_INTERVAL
                note = await self._last_log_line(row.handle or {})
                if note and note != row.reason:
                    await self.store.save(row, reason=note)
            return
        if watch.failures >= row.spec.health.retries or not watch.ever_healthy:
            reason = f"health check failing: {detail}" if detail else "health check failing"
            if row.phase is not Phase.UNHEALTHY or row.reason != reason:
                await self.store.save(row, phase=Phase.UNHEALTHY, healthy=False, reason=reason)

    async def _last_log_line(self, handle: Handle) -> str | None:
        try:
            lines = [line async for line in self.runtime.logs(handle, tail=1)]
        except Exception:  # logs are a courtesy here; the status must not fail for them
            return None
        return lines[-1].strip()[:300] if lines and lines[-1].strip() else None

    # -- starting instances -------------------------------------------------------------

    async def environment(self, row: ServiceRow, spec: ServiceSpec) -> tuple[dict[str, str], str]:
        """LAB_* variables, then the user's environment, which may override them; and the
        id of the instance's new token (only its hash is stored, so every instance gets
        a new one)."""
        token_id, secret = await self.store.issue_token(row)
        env = {
            "LAB_ENDPOINT": self.settings.endpoint,
            "LAB_API_TOKEN": secret,
            "LAB_PROJECT": row.project,
            "LAB_SERVICE_PATH": service_path(row.project, row.name),
        }
        env.update(
            service_url_env(
                row.project,
                row.name,
                spec,
                endpoint=self.settings.endpoint,
                service_domain=self.settings.service_domain,
            )
        )
        env.update(spec.env)
        return env, token_id

    async def start_instance(
        self,
        row: ServiceRow,
        *,
        reason: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Start a new instance of the row's spec and store its handle; a start the
        runtime refuses is recorded on the service (`failed`, reason, back-off)."""
        env, token_id = await self.environment(row, row.spec)
        try:
            handle = await self.runtime.start(row.spec, env, progress)
        except asyncio.CancelledError:
            await self.store.revoke_tokens(row.id, only=token_id)
            raise
        except Exception as exc:
            await self.store.revoke_tokens(row.id, only=token_id)
            await self.store.save(row, handle=None)
            await self.record_failure(row, exc)
            return
        await self.store.revoke_tokens(row.id, keep=token_id)
        self._tokens_changed()
        self.watches[row.id] = Watch()
        await self.store.save(
            row,
            handle=handle,
            phase=Phase.STARTING,
            healthy=None,
            reason=reason,
            started_at=utcnow(),
        )
