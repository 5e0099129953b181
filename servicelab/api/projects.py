"""Projects, their members and their API tokens, on ML Lab's `/api/projects` paths."""

from __future__ import annotations

from anyio import from_thread
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import MAX_TOKEN_LIFETIME, Forbidden, Identity, issue_token, revoke
from servicelab.db import ApiToken, Membership, Project, User
from servicelab.spec import normalize_name

from .deps import (
    ProjectContext,
    authority,
    current_identity,
    db_session,
    header_identity,
    lab,
    project_context,
    require_user,
)
from .errors import ApiError
from .serializers import project_out, token_out

router = APIRouter(prefix="/api/projects", tags=["projects"])


class NewProject(BaseModel):
    name: str
    description: str = Field(default="", max_length=2000)


class NewProjectToken(BaseModel):
    name: str = Field(default="", max_length=255)
    expires_in: float | None = Field(
        default=None, alias="expiresIn", gt=0, le=MAX_TOKEN_LIFETIME, description="Seconds"
    )
    model_config = {"populate_by_name": True}


def _owner_name(session: Session, project: Project) -> str | None:
    if project.owner_id is None:
        return None
    owner = session.get(User, project.owner_id)
    return owner.username if owner else None


def _members(session: Session, project: Project) -> list[str]:
    return list(
        session.scalars(
            select(User.username)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.project_id == project.id)
            .order_by(User.username)
        )
    )


@router.get("", summary="Projects the caller may open")
def list_projects(
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    query = select(Project).order_by(Project.name)
    if identity.is_project_token:
        query = query.where(Project.id == identity.project_id)
    elif not identity.is_admin:
        member_of = select(Membership.project_id).where(Membership.user_id == identity.user_id)
        query = query.where(or_(Project.owner_id == identity.user_id, Project.id.in_(member_of)))
    projects = session.scalars(query).all()
    return envelope.success([project_out(p, owner=_owner_name(session, p)) for p in projects])


@router.post("", summary="Create a project; the caller becomes its owner", status_code=201)
def create_project(
    body: NewProject | None = Body(default=None),
    name: str | None = Query(default=None),
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    if body is None:
        if not name:
            raise ApiError(400, "Give the project's 'name' (JSON body or query).")
        body = NewProject(name=name)
    project_name = normalize_name(body.name, what="project name")
    if session.scalar(select(Project.id).where(Project.name == project_name)):
        raise ApiError(409, f"Project {project_name!r} already exists.", code="conflict")
    project = Project(name=project_name, description=body.description, owner_id=identity.user_id)
    session.add(project)
    session.flush()
    session.add(Membership(user_id=identity.user_id, project_id=project.id))
    session.flush()
    return envelope.success(
        project_out(project, owner=identity.username, members=[identity.username or ""]),
        status=201,
        message="Project created.",
    )


@router.get("/{project}/available", summary="Whether a project name is free (ML Lab)")
def project_available(
    project: str,
    _: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    """200 with `data: true` when a project of this name can be created; 409 when the
    name is taken (creating it would fail the same way); 400 for an invalid name."""
    name = normalize_name(project, what="project name")
    if session.scalar(select(Project.id).where(Project.name == name)):
        raise ApiError(409, f"Project {name!r} already exists.", code="conflict")
    return envelope.success(True, message=f"Project name {name!r} is available.")


@router.get("/{project}", summary="One project")
def get_project(ctx: ProjectContext = Depends(project_context)) -> dict:
    session, project = ctx.session, ctx.project
    return envelope.success(
        project_out(
            project, owner=_owner_name(session, project), members=_members(session, project)
        )
    )


@router.delete("/{project}", summary="Delete a project with its services and data")
def delete_project(request: Request, ctx: ProjectContext = Depends(project_context)) -> dict:
    if not authority(request).can_manage(ctx.identity, ctx.project):
        raise Forbidden("Only the project's owner or an admin can delete it.")
    name = ctx.project.name
    # Services and files live outside the database: remove them first, so that a failure
    # leaves a project that can be deleted again rather than orphans.
    for cleanup in lab(request).project_cleanups:
        from_thread.run(cleanup, name)
    ctx.session.delete(ctx.project)
    ctx.session.flush()
    authority(request).forget()
    return envelope.success(None, message=f"Project {name!r} deleted.")


# -- members ----------------------------------------------------------------------------


@router.get("/{project}/members", summary="The project's members")
def list_members(ctx: ProjectContext = Depends(project_context)) -> dict:
    return envelope.success(_members(ctx.session, ctx.project))


# -- project tokens ---------------------------------------------------------------------


def _require_person(ctx: ProjectContext) -> Identity:
    if ctx.identity.is_project_token or ctx.identity.user_id is None:
        raise Forbidden("A project token cannot create or list tokens: use a user's token.")
    return ctx.identity


@router.get(
    "/{project}/token",
    summary="A new project API token (ML Lab)",
    dependencies=[Depends(header_identity)],
)
def project_token(ctx: ProjectContext = Depends(project_context)) -> dict:
    identity = _require_person(ctx)
    issued = issue_token(
        ctx.session,
        "project",
        user_id=identity.user_id,
        project_id=ctx.project.id,
        name="project token",
    )
    return envelope.success(issued.secret, message="Keep this token: it is shown only once.")


@router.post("/{project}/tokens", summary="Create a named project token", status_code=201)
def create_project_token(
    body: NewProjectToken, ctx: ProjectContext = Depends(project_context)
) -> dict:
    identity = _require_person(ctx)
    issued = issue_token(
        ctx.session,
        "project",
        user_id=identity.user_id,
        project_id=ctx.project.id,
        name=body.name,
        expires_in=body.expires_in,
    )
    data = token_out(issued.token, project=ctx.project.name)
    data["token"] = issued.secret
    return envelope.success(data, status=201, message="Keep this token: it is shown only once.")


@router.get("/{project}/tokens", summary="The project's tokens (yours; all for owner or admin)")
def list_project_tokens(request: Request, ctx: ProjectContext = Depends(project_context)) -> dict:
    identity = _require_person(ctx)
    query = select(ApiToken).where(
        ApiToken.project_id == ctx.project.id,
        ApiToken.kind == "project",
        ApiToken.revoked_at.is_(None),
    )
    if not authority(request).can_manage(identity, ctx.project):
        query = query.where(ApiToken.user_id == identity.user_id)
    tokens = ctx.session.scalars(query.order_by(ApiToken.created_at)).all()
    return envelope.success([token_out(t, project=ctx.project.name) for t in tokens])


@router.delete("/{project}/tokens/{token_id}", summary="Revoke a project token")
def revoke_project_token(
    token_id: str, request: Request, ctx: ProjectContext = Depends(project_context)
) -> dict:
    identity = _require_person(ctx)
    token = ctx.session.get(ApiToken, token_id)
    if token is None or token.project_id != ctx.project.id:
        raise ApiError(404, f"Token {token_id!r} was not found.", code="not_found")
    if token.user_id != identity.user_id and not authority(request).can_manage(
        identity, ctx.project
    ):
        raise Forbidden("Only the token's creator, the project's owner or an admin can revoke it.")
    revoke(ctx.session, token)
    ctx.session.flush()
    authority(request).forget()
    return envelope.success(None, message="Token revoked.")
