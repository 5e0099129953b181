"""What a user leaves running when they lose a project: the services they deployed.

A service runs with a token of its project (its LAB_API_TOKEN), which its deployer could
read and copy. Removing the deployer from the project (or deleting them) must therefore
end that token too, or the project stays open to them through it. The admin chooses:

- `renew` (the default): every old token of those services is revoked at once, in the
  same transaction as the removal, and each running service restarts with a new token
  (`ServiceManager.restart`, forwarded to the leader like any command). A stopped service
  gets its new token when it is next started.
- `stop`: the tokens are revoked the same way and the services are stopped.

Renewing keeps a service up without the tokens its deployer saw; it does not change the
service's code, which still is theirs (a VCS source is fetched again on restart): stop
what you do not trust. The services are found by `created_by`; a service's token names
its deployer (`auth.issue_service_token`), so what a service deployed with its token is
its deployer's too and is found the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from anyio import from_thread
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab.auth import revoke_service_tokens
from servicelab.db import Project, Service, notify
from servicelab.errors import KNOWN, problem

from .deps import lab

#: What happens to the services of a user who loses a project.
ServicesChoice = Literal["renew", "stop"]
SERVICES_HELP = (
    "What happens to the services the user deployed in the project(s): 'renew' restarts "
    "them with new tokens (the old ones are revoked at once), 'stop' stops them."
)


@dataclass(frozen=True)
class LeftService:
    project: Project
    name: str
    running: bool

    @property
    def label(self) -> str:
        return f"{self.project.name}/{self.name}"


def deployed_by(session: Session, project: Project) -> dict[str, list[str]]:
    """Each user's services in `project`, by name: what removing them from the project
    renews or stops, which the admin sees before confirming (the web UI, docs/ui.md)."""
    query = (
        select(Service.created_by, Service.name)
        .where(Service.project_id == project.id, Service.created_by.is_not(None))
        .order_by(Service.name)
    )
    found: dict[str, list[str]] = {}
    for username, name in session.execute(query).all():
        if username:
            found.setdefault(username, []).append(name)
    return found


def revoke_left_services(
    session: Session, username: str, project_id: str | None = None
) -> list[LeftService]:
    """The services `username` deployed (in one project, or in all), with every token
    of theirs revoked in `session`: the caller commits, then `end_services`."""
    query = (
        select(Service, Project)
        .join(Project, Service.project_id == Project.id)
        .where(Service.created_by == username)
        .order_by(Project.name, Service.name)
    )
    if project_id is not None:
        query = query.where(Service.project_id == project_id)
    left = []
    for row, project in session.execute(query).all():
        revoke_service_tokens(session, row.id)
        left.append(LeftService(project, row.name, row.desired == "running"))
    if left:
        notify(session, "tokens")  # the other lab processes drop their caches at commit
    return left


def end_services(
    request: Request, left: list[LeftService], choice: ServicesChoice, *, labels: bool = False
) -> str:
    """Restart (renew) or stop each service, after their tokens were revoked and
    committed; a sentence for the answer's message. A service that cannot be restarted
    or stopped is named with the reason: its old token is revoked all the same."""
    if not left:
        return "no services of theirs to renew or stop"
    manager = lab(request).manager
    done: list[str] = []
    failed: list[str] = []
    for item in left:
        name = item.label if labels else item.name
        try:
            if choice == "stop":
                from_thread.run(manager.stop, item.project, item.name)
            elif item.running:
                from_thread.run(manager.restart, item.project, item.name)
        except KNOWN as exc:
            found = problem(exc)
            failed.append(f"{name} ({found.message if found else exc})")
            continue
        done.append(name)
    verb = "stopped" if choice == "stop" else "renewed (new tokens; the old ones revoked)"
    sentence = f"their services {verb}: {', '.join(done)}" if done else ""
    if failed:
        sentence += (
            f"{'; ' if sentence else ''}could not {choice} {', '.join(failed)}, "
            "whose old tokens are revoked all the same"
        )
    return sentence
