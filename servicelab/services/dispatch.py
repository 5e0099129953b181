"""The leader's one dispatcher: a command another lab process sent, run by the same
`ServiceManager` method that would have run it there.

Each command class maps to one handler, which calls the manager method and returns its
result as JSON values (the sender reads the service's row again by its id). A command
with no handler is a bug caught by tests/test_commands.py, not at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from servicelab.db import Project
from servicelab.errors import NotFound

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

if TYPE_CHECKING:
    from .manager import ServiceManager

Result = dict[str, Any]
Handler = Callable[["ServiceManager", Project, Any], Awaitable[Result]]


async def _deploy(manager: ServiceManager, project: Project, command: Deploy) -> Result:
    row, created = await manager.deploy(
        project,
        command.spec,
        created_by=command.created_by,
        replace_existing=command.replace_existing,
    )
    return {"id": row.id, "created": created}


async def _stop(manager: ServiceManager, project: Project, command: Stop) -> Result:
    return {"id": (await manager.stop(project, command.name)).id}


async def _start(manager: ServiceManager, project: Project, command: Start) -> Result:
    return {"id": (await manager.start_service(project, command.name)).id}


async def _restart(manager: ServiceManager, project: Project, command: Restart) -> Result:
    return {"id": (await manager.restart(project, command.name)).id}


async def _delete(manager: ServiceManager, project: Project, command: Delete) -> Result:
    await manager.delete(project, command.name, purge=command.purge)
    return {}


async def _delete_project(
    manager: ServiceManager, project: Project, command: DeleteProject
) -> Result:
    await manager.delete_project(project.name)
    return {}


async def _purge_kept_data(
    manager: ServiceManager, project: Project, command: PurgeKeptData
) -> Result:
    await manager.purge_kept_data(project, command.name)
    return {}


#: Command class -> the handler that runs it on the leader.
HANDLERS: dict[type[Command], Handler] = {
    Deploy: _deploy,
    Stop: _stop,
    Start: _start,
    Restart: _restart,
    Delete: _delete,
    DeleteProject: _delete_project,
    PurgeKeptData: _purge_kept_data,
}


class Dispatcher:
    """Runs commands on the leader's manager (`CommandQueue.serve` calls it)."""

    def __init__(self, manager: ServiceManager) -> None:
        self.manager = manager

    async def __call__(self, command: Command) -> Result:
        project = await self.manager.store.find_project(command.project)
        if project is None:
            raise NotFound(f"Project {command.project!r} was not found.")
        return await HANDLERS[type(command)](self.manager, project, command)
