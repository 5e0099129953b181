"""One lab process among several on one database: leading when elected, following always.

While this process leads (see `leader.py`) it adopts what runs (a previous leader may
have died in the middle of anything), then runs the reconcile loop and the commands the
other processes write (`commands.py`). When it stops leading, both stop at once.

Whether it leads or not, it follows what the others change: each message on the
database's channel (`service <id>`, `tokens`, `command`, `done <id>`) refreshes one
route, drops the token caches, or wakes the command queue; and every
`FULL_REFRESH_INTERVAL` seconds it rereads every row, in case a message was lost
(a reconnect of the listening connection also triggers that full refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .adopt import adopt
from .dispatch import Dispatcher

if TYPE_CHECKING:
    from .manager import ServiceManager

log = logging.getLogger("servicelab.replica")

#: Seconds between two full rereads of the rows by a process that does not reconcile.
FULL_REFRESH_INTERVAL = 5.0
#: How often the process checks whether it gained or lost the leadership (seconds).
CHECK_INTERVAL = 0.2


class Replica:
    def __init__(self, manager: ServiceManager) -> None:
        self.manager = manager
        self.leadership = manager.leadership
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._leading: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._pending: set[asyncio.Task[Any]] = set()
        #: One refresh of a route at a time, so that an older read never lands last.
        self._refreshing: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.refresh_all()
        self.leadership.start(self._on_message, self._on_change)
        self._supervisor = asyncio.create_task(self._supervise(), name="servicelab-replica")

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._stop_leading()
        await asyncio.to_thread(self.leadership.close)

    @property
    def leading(self) -> bool:
        return bool(self._leading)

    # -- leading --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        next_refresh = 0.0
        while True:
            leader = self.leadership.is_leader
            if leader and not self._leading:
                await self._start_leading()
            elif not leader and self._leading:
                log.warning("not the leader any more: reconcile and commands stop here")
                await self._stop_leading()
            now = asyncio.get_running_loop().time()
            if not self._leading and self.leadership.shared and now >= next_refresh:
                next_refresh = now + FULL_REFRESH_INTERVAL
                try:
                    await self.refresh_all()
                except Exception:  # the database is away: next time
                    log.exception("could not reread the services")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), CHECK_INTERVAL)

    async def _start_leading(self) -> None:
        """Adopt first: a leader that died may have left a second instance of a service
        (killed during an update or a start), or an instance its rows do not name."""
        manager = self.manager
        try:
            rows = await manager.store.all()
            for row_id, handle in (await adopt(manager.runtime, rows)).items():
                row = next(r for r in rows if r.id == row_id)
                await manager.store.save(row, handle=handle)
            for row in rows:
                await manager.routes.refresh(row)
        except Exception:  # lost the lock meanwhile, or the database is away: retry
            log.exception("adoption failed; trying again")
            return
        manager.reconciler.watches.clear()
        self._leading = [
            asyncio.create_task(manager.reconciler.run(), name="servicelab-reconcile"),
            asyncio.create_task(
                manager.commands.serve(Dispatcher(manager)), name="servicelab-commands"
            ),
        ]

    async def _stop_leading(self) -> None:
        tasks, self._leading = self._leading, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- following ------------------------------------------------------------------------

    def _on_change(self) -> None:
        """Leadership changed (called in the leadership's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    def _on_message(self, message: str) -> None:
        """A message on the channel (called in the leadership's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._handle, message)

    def _handle(self, message: str) -> None:
        kind, _, arg = message.partition(" ")
        if kind == "service":
            self._spawn(self.refresh_one(arg))
        elif kind == "tokens":
            self.manager.authority.drop_caches()
        elif kind == "command":
            self.manager.commands.wake()
        elif kind == "done":
            self.manager.commands.finished(arg)
        elif kind == "refresh":
            self.manager.authority.drop_caches()
            self._spawn(self.refresh_all())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def refresh_one(self, service_id: str) -> None:
        manager = self.manager
        lock = self._refreshing.setdefault(service_id, asyncio.Lock())
        try:
            async with lock:
                row = await manager.store.get(service_id)
                if row is None:
                    manager.routes.drop_id(service_id)
                else:
                    await manager.routes.refresh(row)
        except Exception:  # the full refresh catches up
            log.exception("could not refresh the route of service %s", service_id)

    async def refresh_all(self) -> None:
        manager = self.manager
        rows = await manager.store.all()
        for row in rows:
            await manager.routes.refresh(row)
        manager.routes.keep_only({row.key for row in rows})
