"""ML Lab's `GET /api/admin/info`: what lab this is.

ML Lab's `Environment` calls it first to tell whether the lab is reachable; without it the
client falls back to an offline environment without a word.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import Identity
from servicelab.db import Membership, Project

from .deps import current_identity, db_session, lab

router = APIRouter(prefix="/api/admin", tags=["admin"])

#: ML Lab's deployment namespace; servicelab has one lab per database.
NAMESPACE = "servicelab"


def _projects_count(session: Session, identity: Identity) -> int:
    """How many projects the caller may open (ML Lab counted all; a count of others'
    projects would tell an ordinary user what they cannot see)."""
    query = select(func.count(Project.id))
    if identity.is_project_token:
        query = query.where(Project.id == identity.project_id)
    elif not identity.is_admin:
        member_of = select(Membership.project_id).where(Membership.user_id == identity.user_id)
        query = query.where(or_(Project.owner_id == identity.user_id, Project.id.in_(member_of)))
    return int(session.scalar(query) or 0)


@router.get("/info", summary="What lab this is (ML Lab's LabInfo)")
def lab_info(
    request: Request,
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    runtime = lab(request).runtime.name
    database = session.get_bind().dialect.name
    return envelope.success(
        {
            "version": request.app.version,
            "runtime": runtime,
            "namespace": NAMESPACE,
            "projectsCount": _projects_count(session, identity),
            "termsOfService": "",
            "coreServiceInfo": {
                "service": "servicelab",
                "version": request.app.version,
                "runtime": runtime,
                "database": database,
            },
            "healthy": True,
        }
    )
