"""An update without downtime: the new instance starts beside the old one.

Only once the new instance is healthy are the new spec and handle stored (together, so
a kill at any moment leaves one consistent pair), the route switched and the old
instance stopped. If it never becomes healthy, the old one keeps serving and the
service's reason says why. The old instance keeps its token until the new one serves
in its place.

`ServiceManager.update` calls `roll_out` with the service's lock held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servicelab.db import utcnow
from servicelab.errors import Conflict, UpdateFailed
from servicelab.runtimes.base import ProgressCallback
from servicelab.spec import Phase, ServiceSpec

from .reconcile import Watch
from .store import ServiceRow

if TYPE_CHECKING:
    from .manager import ServiceManager


async def roll_out(
    manager: ServiceManager,
    row: ServiceRow,
    spec: ServiceSpec,
    progress: ProgressCallback | None = None,
) -> ServiceRow:
    """Move the service of `row` to `spec`; the row as stored afterwards."""
    fresh = await manager.store.get(row.id)
    if fresh is None:
        raise Conflict(f"Service {row.name!r} was just deleted.")
    row = fresh
    old_handle = row.handle
    env, token_id = await manager.reconciler.environment(row, spec)
    try:
        new_handle = await manager.runtime.start(spec, env, progress)
    except BaseException:
        await manager.store.revoke_tokens(row.id, only=token_id)
        raise
    healthy, detail = await manager.prober.wait_healthy(new_handle, spec)
    if not healthy:
        await manager.runtime.stop(new_handle)
        await manager.store.revoke_tokens(row.id, only=token_id)
        reason = f"update failed, the previous version keeps serving: {detail}"
        await manager.store.save(row, reason=reason)
        raise UpdateFailed(reason)
    await manager.store.save(
        row,
        spec=spec,
        handle=new_handle,
        desired="running",
        phase=Phase.RUNNING,
        healthy=True,
        reason=None,
        modified_at=utcnow(),
        started_at=utcnow(),
    )
    await manager.routes.refresh(row)
    if old_handle:
        await manager.runtime.stop(old_handle)
    await manager.store.revoke_tokens(row.id, keep=token_id)
    manager.authority.forget()
    manager.reconciler.watches[row.id] = Watch(ever_healthy=True)
    return row
