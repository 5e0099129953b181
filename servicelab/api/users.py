"""Users and their passwords, on ML Lab's `/api/auth/users` paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import Identity, issue_token
from servicelab.auth import users as users_domain
from servicelab.auth.passwords import MIN_PASSWORD_LENGTH, too_short
from servicelab.db import User
from servicelab.spec import normalize_name

from .deps import authority, db_session, header_identity, lab, require_admin, require_user
from .errors import ApiError
from .member_services import SERVICES_HELP, ServicesChoice, end_services, revoke_left_services
from .serializers import last_activity, user_out

router = APIRouter(prefix="/api/auth", tags=["auth"])


class NewUser(BaseModel):
    username: str
    password: str = Field(min_length=MIN_PASSWORD_LENGTH)
    admin: bool = False


class PasswordChange(BaseModel):
    password: str
    #: The caller's own current password: always needed for your own; for an admin
    #: changing another's, the admin's (or a fresh log-in session instead).
    current_password: str | None = Field(default=None, alias="currentPassword")
    model_config = {"populate_by_name": True}


def _check_password(password: str) -> None:
    if too_short(password):
        raise ApiError(400, f"The password needs at least {MIN_PASSWORD_LENGTH} characters.")


def _user_not_found(username: str) -> ApiError:
    return ApiError(404, f"User {username!r} was not found.", code="not_found")


def find_user(session: Session, username: str) -> User:
    """The user, or 404."""
    user = users_domain.find_user(session, username)
    if user is None:
        raise _user_not_found(username)
    return user


def _visible_user(session: Session, identity: Identity, username: str) -> User:
    """The user, when the caller may see them (an admin, or the user themself). Anyone
    else gets the answer of a user who does not exist: a 403 would tell them who does."""
    found = find_user(session, username)
    if not identity.is_admin and found.id != identity.user_id:
        raise _user_not_found(username)
    return found


def _new_user(
    raw: dict[str, Any] | None, username: str | None, password: str | None, admin: bool
) -> NewUser:
    """The user to create, from a JSON body or (ML Lab's client) from the query."""
    if raw:
        try:
            return NewUser.model_validate(raw)
        except ValueError as exc:
            raise ApiError(
                400,
                "Send JSON {'username': ..., 'password': ... (at least "
                f"{MIN_PASSWORD_LENGTH} characters), 'admin': false}}.",
            ) from exc
    if not username or not password:
        raise ApiError(400, "Give 'username' and 'password' (JSON body or query).")
    _check_password(password)
    return NewUser(username=username, password=password, admin=admin)


@router.get("/users", summary="All users (admin)")
def list_users(
    _: Identity = Depends(require_admin), session: Session = Depends(db_session, scope="function")
) -> dict:
    users = users_domain.all_users(session)
    active = last_activity(session, [u.id for u in users])
    return envelope.success([user_out(u, active_at=active.get(u.id)) for u in users])


@router.post("/users", summary="Create a user (admin)", status_code=201)
def create_user(
    raw: dict[str, Any] | None = Body(default=None),
    username: str | None = Query(default=None, alias="user"),
    password: str | None = Query(default=None),
    admin: bool = Query(default=False),
    _: Identity = Depends(require_admin),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    # ML Lab's client sends the user in the query and always a `{}` body.
    body = _new_user(raw, username, password, admin)
    name = normalize_name(body.username, what="username")
    try:
        user = users_domain.create_user(session, name, body.password, admin=body.admin)
    except users_domain.UserExists:
        raise ApiError(409, f"User {name!r} already exists.", code="conflict") from None
    return envelope.success(user_out(user), status=201, message="User created.")


@router.get("/users/{user}", summary="One user (admin or the user)")
def get_user(
    user: str,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    found = _visible_user(session, identity, user)
    active = last_activity(session, [found.id]).get(found.id)
    return envelope.success(user_out(found, active_at=active))


@router.delete("/users/{user}", summary="Delete a user (admin); renew or stop their services")
def delete_user(
    user: str,
    request: Request,
    services: ServicesChoice = Query(default="renew", description=SERVICES_HELP),
    identity: Identity = Depends(require_admin),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    found = find_user(session, user)
    if found.id == identity.user_id:
        raise ApiError(400, "You cannot delete yourself.")
    left = revoke_left_services(session, found.username)
    # Committed before the services restart: their new tokens must not name the user.
    users_domain.delete_user(session, found)
    authority(request).forget()
    done = end_services(request, left, services, labels=True)
    return envelope.success(None, message=f"User {found.username!r} deleted; {done}.")


@router.get(
    "/users/{user}/token",
    summary="A new user API token (ML Lab)",
    dependencies=[Depends(header_identity)],
)
def user_token(
    user: str,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    found = _visible_user(session, identity, user)
    issued = issue_token(session, "user", user_id=found.id, name="api token")
    return envelope.success(issued.secret, message="Keep this token: it is shown only once.")


# -- passwords ----------------------------------------------------------------------------


def _change_password(
    request: Request,
    session: Session,
    identity: Identity,
    user: str,
    password: str,
    current_password: str | None,
    *,
    own_needs_current: bool,
) -> str:
    """Set a new password, end the user's other sessions, and return a fresh session
    token (ML Lab answered this route with a new token)."""
    found = _visible_user(session, identity, user)
    _check_password(password)
    need_current = own_needs_current and found.id == identity.user_id
    try:
        users_domain.prove_presence(
            session, identity, found, current_password, need_current=need_current
        )
    except users_domain.WrongPassword as exc:
        raise ApiError(400, str(exc), code="wrong_password") from None
    issued = users_domain.set_password(
        session,
        found,
        password,
        keep_token_id=identity.token_id,
        session_ttl=lab(request).settings.session_ttl,
    )
    authority(request).forget()
    return issued.secret


@router.get(
    "/users/{user}/password",
    summary="Change a password (ML Lab): a fresh log-in session in the Authorization header",
)
def change_password_get(
    user: str,
    request: Request,
    password: str = Query(description="The new password"),
    identity: Identity = Depends(header_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    """ML Lab's client logs in (GET /api/auth/login) and calls this with that session:
    the route has no field for the current password, so only such a session will do."""
    secret = _change_password(
        request, session, identity, user, password, None, own_needs_current=False
    )
    return envelope.success(secret, message="Password changed; other sessions ended.")


@router.put(
    "/users/{user}/password",
    summary="Change a password: yours needs the current one; an admin's needs theirs or a "
    "fresh log-in",
)
def change_password(
    user: str,
    body: PasswordChange,
    request: Request,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    secret = _change_password(
        request,
        session,
        identity,
        user,
        body.password,
        body.current_password,
        own_needs_current=True,
    )
    return envelope.success(secret, message="Password changed; other sessions ended.")
