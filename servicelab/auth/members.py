"""Project membership: who besides its owner (and the admins) may open a project.

Removing a member also revokes the project tokens they made there, which would otherwise
open the project on their own; the services they deployed there are the caller's to
renew or stop (`servicelab.api.member_services`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab.db import Membership, Project, User

from .tokens import revoke_member_tokens


def membership(session: Session, user: User, project: Project) -> Membership | None:
    return session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.project_id == project.id)
    )


def add_member(session: Session, user: User, project: Project) -> None:
    """Make `user` a member of `project`, unless they are one already."""
    if membership(session, user, project) is None:
        session.add(Membership(user_id=user.id, project_id=project.id))


def keeps_access(user: User, project: Project) -> bool:
    """Whether `user` opens `project` without being a member: its owner, or an admin."""
    return user.is_admin or project.owner_id == user.id


def remove_member(session: Session, user: User, project: Project) -> int | None:
    """End the membership (if any). When that ends the user's access, revoke the project
    tokens they made there and return how many; None when they keep access."""
    existing = membership(session, user, project)
    if existing is not None:
        session.delete(existing)
    if keeps_access(user, project):
        return None
    return revoke_member_tokens(session, user.id, project.id)
