"""Adoption: after a restart of the lab, keep exactly one instance of each service.

A lab killed at the wrong moment (during an update, a deploy or a restart) can leave two
instances of a service running. The rows say which one is the service's: the instance
the stored handle names (the spec and handle are always stored together), else the
newest healthy one. Every other instance of this lab is stopped.
"""

from __future__ import annotations

import logging
from datetime import datetime

from servicelab.runtimes.base import Handle, Runtime
from servicelab.spec import Phase

from .store import ServiceRow

log = logging.getLogger("servicelab.services")


async def choose(runtime: Runtime, row: ServiceRow, instances: list[Handle]) -> Handle | None:
    """The instance the service keeps, or None (stopped, or nothing runs)."""
    if row.desired != "running" or not instances:
        return None
    if row.handle is not None:
        stored = runtime.instance_key(row.handle)
        for handle in instances:
            if runtime.instance_key(handle) == stored:
                return handle
    ranked = []
    for handle in instances:
        status = await runtime.status(handle)
        if status.phase not in (Phase.FAILED, Phase.STOPPED):
            started = status.started_at.replace(tzinfo=None) if status.started_at else None
            ranked.append(((status.healthy is True, started or datetime.min), handle))
    if not ranked:
        return None
    ranked.sort(key=lambda item: item[0])
    return ranked[-1][1]


async def adopt(runtime: Runtime, rows: list[ServiceRow]) -> dict[str, Handle | None]:
    """Stop every instance but the one each row keeps; returns row id -> kept handle
    for the rows whose stored handle must change."""
    found: dict[str, list[Handle]] = {}
    for instance in await runtime.adopt():
        found.setdefault(instance.key, []).append(instance.handle)
    changes: dict[str, Handle | None] = {}
    for row in rows:
        instances = found.pop(row.spec.key, [])
        keep = await choose(runtime, row, instances)
        for handle in instances:
            if keep is None or runtime.instance_key(handle) != runtime.instance_key(keep):
                log.info("stopping an extra instance of %s/%s", row.project, row.name)
                await runtime.stop(handle)
        if keep is not None and (
            row.handle is None or runtime.instance_key(keep) != runtime.instance_key(row.handle)
        ):
            changes[row.id] = keep
    for key, handles in found.items():
        for handle in handles:
            log.info("stopping %s: it runs but no service of this lab owns it", key)
            await runtime.stop(handle)
    return changes
