"""Project members, on ML Lab's `/api/auth/users/{user}/projects/{project}` paths."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import Forbidden, Identity
from servicelab.auth import members as members_domain
from servicelab.db import Project

from .deps import (
    authority,
    db_session,
    find_project,
    header_identity,
    project_not_found,
    require_user,
)
from .member_services import SERVICES_HELP, ServicesChoice, end_services, revoke_left_services
from .users import find_user

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _managed_project(request: Request, session: Session, identity: Identity, name: str) -> Project:
    """The project, when the caller may change its members (owner or admin). A project
    the caller cannot even open answers as if absent (see `project_not_found`)."""
    found = find_project(session, name)
    if not authority(request).can_open(identity, found):
        raise project_not_found(found.name)
    if not authority(request).can_manage(identity, found):
        raise Forbidden("Only the project's owner or an admin can change its members.")
    return found


def _add_member(
    request: Request, session: Session, identity: Identity, user: str, project: str
) -> dict:
    found_project = _managed_project(request, session, identity, project)
    found_user = find_user(session, user)
    members_domain.add_member(session, found_user, found_project)
    # Committed before the caches are emptied: a request in between must not cache the
    # old membership again.
    session.commit()
    authority(request).forget()
    return envelope.success(None, message=f"{found_user.username} added to {found_project.name}.")


def _remove_member(
    request: Request,
    session: Session,
    identity: Identity,
    user: str,
    project: str,
    services: ServicesChoice,
) -> dict:
    """End the membership, the project tokens the user made, and the tokens of the
    services they deployed there, in one transaction; then renew or stop those services
    (`member_services`). Also for a user who is no member any more: calling it again
    ends what an earlier removal left running."""
    found_project = _managed_project(request, session, identity, project)
    found_user = find_user(session, user)
    revoked = members_domain.remove_member(session, found_user, found_project)
    left = []
    if revoked is not None:  # they lost access: so do the services they deployed there
        left = revoke_left_services(session, found_user.username, found_project.id)
    session.commit()
    authority(request).forget()
    done = end_services(request, left, services)
    return envelope.success(
        None,
        message=f"{found_user.username} removed from {found_project.name}; "
        f"{revoked or 0} project token(s) they made revoked; {done}.",
    )


@router.get(
    "/users/{user}/projects/{project}",
    summary="Add a user to a project (ML Lab; token in the Authorization header only)",
)
def add_member_get(
    user: str,
    project: str,
    request: Request,
    identity: Identity = Depends(header_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    return _add_member(request, session, identity, user, project)


@router.post("/users/{user}/projects/{project}", summary="Add a user to a project")
def add_member(
    user: str,
    project: str,
    request: Request,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    return _add_member(request, session, identity, user, project)


@router.delete(
    "/users/{user}/projects/{project}",
    summary="Remove a user from a project; renew or stop the services they deployed there",
)
def remove_member(
    user: str,
    project: str,
    request: Request,
    services: ServicesChoice = Query(default="renew", description=SERVICES_HELP),
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    return _remove_member(request, session, identity, user, project, services)
