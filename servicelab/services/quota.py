"""The per-project quota of services (issue 26): one project of a shared lab must not take
every process, port and container of it.

Checked where a service is created (`ServiceManager.deploy`), which every entry point
reaches (REST, PUT, the models route, UI, CLI, and other lab processes' commands through
the leader). Updating a service takes no new place; stopped services keep theirs.
"""

from __future__ import annotations

from servicelab.db import Project
from servicelab.errors import LimitReached

from .store import ServiceStore


async def check_service_quota(store: ServiceStore, project: Project, limit: int) -> None:
    """Raise LimitReached (429) when `project` already has `limit` services; 0: no quota.

    The caller holds the project's lock until the new row is in, so that deploys side by
    side cannot together pass the quota.
    """
    if not limit:
        return
    count = len(await store.of_project(project.id))
    if count >= limit:
        plural = "" if limit == 1 else "s"
        raise LimitReached(
            f"Project {project.name!r} has {count} of its quota of {limit} service{plural}: "
            "delete a service first, or ask an admin to raise SERVICELAB_PROJECT_MAX_SERVICES."
        )
