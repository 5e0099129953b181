"""The caller's API tokens, on ML Lab's `/api/auth/tokens` paths."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import MAX_TOKEN_LIFETIME, Identity, issue_token
from servicelab.auth import tokens as tokens_domain

from .deps import authority, db_session, find_project, project_not_found, require_user
from .errors import ApiError
from .serializers import token_out

router = APIRouter(prefix="/api/auth", tags=["auth"])


class NewToken(BaseModel):
    name: str = Field(default="", max_length=255)
    #: "user" (acts as you in all your projects) or "project" (one project only)
    kind: str = "user"
    project: str | None = None
    #: Seconds until the token expires; none for no expiry.
    expires_in: float | None = Field(
        default=None, alias="expiresIn", gt=0, le=MAX_TOKEN_LIFETIME, description="Seconds"
    )
    model_config = {"populate_by_name": True}


@router.get("/tokens", summary="Your API tokens (user and project tokens you created)")
def list_tokens(
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    rows = tokens_domain.api_tokens_of(session, identity.user_id)
    return envelope.success([token_out(t, project=p) for t, p in rows])


@router.post(
    "/tokens", summary="Create an API token; its secret is shown only now", status_code=201
)
def create_token(
    body: NewToken,
    request: Request,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    if body.kind not in ("user", "project"):
        raise ApiError(400, "Token kind must be 'user' or 'project'.")
    project_id = project_name = None
    if body.kind == "project":
        if not body.project:
            raise ApiError(400, "A project token needs 'project'.")
        project = find_project(session, body.project)
        if not authority(request).can_open(identity, project):
            raise project_not_found(project.name)
        project_id, project_name = project.id, project.name
    issued = issue_token(
        session,
        body.kind,
        user_id=identity.user_id,
        project_id=project_id,
        name=body.name,
        expires_in=body.expires_in,
    )
    data = token_out(issued.token, project=project_name)
    data["token"] = issued.secret
    return envelope.success(data, status=201, message="Keep this token: it is shown only once.")


@router.delete("/tokens/{token_id}", summary="Revoke one of your API tokens")
def revoke_token(
    token_id: str,
    request: Request,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    if not tokens_domain.revoke_own_token(session, identity, token_id):
        raise ApiError(404, f"Token {token_id!r} was not found.", code="not_found")
    authority(request).forget()
    return envelope.success(None, message="Token revoked.")
