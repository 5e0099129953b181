"""Who a request acts as, and the two errors every permission check may raise.

These are plain frozen values, not ORM objects, so that `TokenAuthority` may cache them
across requests and threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from servicelab.db import ApiToken, Project, User


@dataclass(frozen=True)
class Identity:
    """Who a request acts as. Cached, so it holds plain values, not ORM objects."""

    token_id: str
    kind: str
    user_id: str | None
    username: str | None
    is_admin: bool
    #: For project tokens: the one project they open.
    project_id: str | None
    project_name: str | None
    expires_at: datetime | None

    @property
    def is_project_token(self) -> bool:
        return self.kind == "project"


@dataclass(frozen=True)
class ProjectRef:
    """What permission checks need of a project."""

    id: str
    name: str
    owner_id: str | None


@dataclass(frozen=True)
class Decision:
    identity: Identity
    project: ProjectRef | None
    allowed: bool


class AuthFailed(Exception):
    """401: no, unknown, expired or revoked token."""


class Forbidden(Exception):
    """403: a valid token that does not allow this."""


def identity_of(token: ApiToken, user: User | None, project: Project | None) -> Identity | None:
    """The identity a live session, user or project token stands for; None for anything
    else (revoked, a one-time code, its user or project gone). A project token never
    carries its creator's admin rights."""
    if token.revoked_at is not None or token.kind not in ("session", "user", "project"):
        return None
    if (token.kind == "project") != (project is not None) or (
        token.kind != "project" and user is None
    ):
        return None
    return Identity(
        token_id=token.id,
        kind=token.kind,
        user_id=user.id if user else None,
        username=user.username if user else None,
        is_admin=bool(user and user.is_admin and token.kind != "project"),
        project_id=project.id if project else None,
        project_name=project.name if project else None,
        expires_at=token.expires_at,
    )
