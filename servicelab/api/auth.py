"""Log-in, users, memberships and API tokens, on ML Lab's `/api/auth` paths."""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import UTC, datetime
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import (
    FRESH_LOGIN,
    LOGIN_SESSION,
    MAX_TOKEN_LIFETIME,
    AuthFailed,
    Forbidden,
    Identity,
    hash_password,
    hash_secret,
    is_fresh_login,
    issue_token,
    revoke,
    revoke_member_tokens,
    verify_password,
)
from servicelab.credentials import COOKIE_NAME, TokenSource, find_token
from servicelab.db import ApiToken, Membership, Project, User
from servicelab.logins import LoginGate, LoginRefused
from servicelab.spec import normalize_name

from .deps import (
    authority,
    check_csrf,
    csrf_token_for,
    current_identity,
    db_session,
    find_project,
    header_identity,
    project_not_found,
    refuse_cross_origin,
    require_admin,
    require_user,
)
from .errors import ApiError
from .member_services import (
    SERVICES_HELP,
    ServicesChoice,
    end_services,
    revoke_left_services,
)
from .serializers import epoch_ms, last_activity, token_out, user_out

router = APIRouter(prefix="/api/auth", tags=["auth"])

MIN_PASSWORD_LENGTH = 8


class Credentials(BaseModel):
    username: str
    password: str


class NewUser(BaseModel):
    username: str
    password: str = Field(min_length=MIN_PASSWORD_LENGTH)
    admin: bool = False


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


class PasswordChange(BaseModel):
    password: str
    #: The caller's own current password: always needed for your own; for an admin
    #: changing another's, the admin's (or a fresh log-in session instead).
    current_password: str | None = Field(default=None, alias="currentPassword")
    model_config = {"populate_by_name": True}


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(400, f"The password needs at least {MIN_PASSWORD_LENGTH} characters.")


# -- log-in -----------------------------------------------------------------------------


def login_gate(request: Request) -> LoginGate:
    gate: LoginGate = request.app.state.login_gate
    return gate


async def verify_login(request: Request, session: Session, username: str, password: str) -> User:
    """The user, when the password is right: 401 when not, 429 when throttled (see
    servicelab.logins). Unknown users cost the same hashing as known ones."""

    def find() -> tuple[User, str] | None:
        user = session.scalar(select(User).where(User.username == username.lower()))
        return (user, user.password_hash) if user else None

    client = request.client.host if request.client else ""
    try:
        user = await login_gate(request).check(username, password, client, find)
    except LoginRefused as exc:
        raise ApiError(
            429, str(exc), code="too_many_requests", headers={"Retry-After": str(exc.retry_after)}
        ) from None
    if user is None:
        raise ApiError(401, "Wrong username or password.", code="unauthorized")
    return user


def check_credentials(session: Session, username: str, password: str, request: Request) -> User:
    """`verify_login` for synchronous handlers (they run in a worker thread)."""
    return from_thread.run(verify_login, request, session, username, password)


def start_session(
    request: Request, response: Response, session: Session, user: User, name: str = LOGIN_SESSION
) -> dict:
    """A new session and its cookie. `name` is LOGIN_SESSION only after the password was
    checked: such a session, while fresh, stands for the password (`is_fresh_login`)."""
    ttl = request.app.state.settings.session_ttl
    issued = issue_token(session, "session", user_id=user.id, name=name, expires_in=ttl)
    set_session_cookie(request, response, issued.secret, max_age=ttl)
    return {
        "token": issued.secret,
        "csrfToken": csrf_token_for(request.app.state.secret_key, issued.token.id),
        "user": user_out(user),
        "expiresAt": epoch_ms(issued.token.expires_at),
    }


def set_session_cookie(request: Request, response: Response, secret: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE_NAME,
        secret,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(
            401,
            "Send your username and password with HTTP Basic authentication.",
            code="unauthorized",
        )
    try:
        username, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "Malformed Basic credentials.") from exc
    return username, password


@router.get("/login", summary="Log in with HTTP Basic credentials (ML Lab)")
async def login_basic(
    request: Request, response: Response, session: Session = Depends(db_session, scope="function")
) -> dict:
    username, password = _basic_credentials(request)
    user = await verify_login(request, session, username, password)
    data = await run_in_threadpool(start_session, request, response, session, user)
    # ML Lab's client reads the token itself from `data`.
    return envelope.success(data["token"], message="Logged in.")


@router.post("/login", summary="Log in with a JSON or form body")
async def login_post(
    request: Request, response: Response, session: Session = Depends(db_session, scope="function")
) -> dict:
    content_type = request.headers.get("content-type", "")
    raw: Any
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raw = dict(await request.form())
    else:
        try:
            raw = await request.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: `[[[[...` nested deep
            raise ApiError(400, "Send JSON {'username': ..., 'password': ...}.") from exc
    try:
        creds = Credentials.model_validate(raw)
    except ValueError as exc:
        raise ApiError(400, "Both 'username' and 'password' are required.") from exc
    user = await verify_login(request, session, creds.username, creds.password)
    data = await run_in_threadpool(start_session, request, response, session, user)
    return envelope.success(data, message="Logged in.")


@router.get("/logout", summary="Log out: end the session (ML Lab)")
def logout(
    request: Request, response: Response, session: Session = Depends(db_session, scope="function")
) -> dict:
    found = find_token(request.headers.get("authorization"), request.cookies, {})
    if found and found.source is TokenSource.COOKIE:
        # Else any page could log the user out (with a link, for this GET).
        refuse_cross_origin(request)
        # Without a live session behind the cookie there is only the cookie to clear.
        with contextlib.suppress(AuthFailed):
            check_csrf(request, authority(request).identify(found.token))
    return end_session(request, response, session)


def end_session(request: Request, response: Response, session: Session) -> dict:
    """Revoke the caller's session token (header or cookie) and clear the cookie."""
    found = find_token(request.headers.get("authorization"), request.cookies, {})
    if found and found.token.startswith("sls_"):
        token = session.scalar(
            select(ApiToken).where(ApiToken.secret_hash == hash_secret(found.token))
        )
        if token is not None:
            revoke(session, token)
            session.flush()
            authority(request).forget()
    response.delete_cookie(COOKIE_NAME, path="/")
    return envelope.success(None, message="Logged out.")


@router.post("/logout", summary="Log out: end the session")
def logout_post(
    request: Request, response: Response, session: Session = Depends(db_session, scope="function")
) -> dict:
    return logout(request, response, session)


@router.get(
    "/refresh",
    summary="A fresh session token for the caller",
    dependencies=[Depends(header_identity)],
)
def refresh(
    request: Request,
    response: Response,
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    user = session.get(User, identity.user_id)
    assert user is not None
    # Not a log-in: a refreshed session never stands for the password.
    data = start_session(request, response, session, user, name="refreshed")
    return envelope.success(data["token"])


def _me(request: Request, identity: Identity, session: Session) -> dict:
    if identity.user_id is None:
        return envelope.success(
            {"id": None, "project": identity.project_name, "tokenKind": identity.kind}
        )
    user = session.get(User, identity.user_id)
    assert user is not None
    data = user_out(user, active_at=last_activity(session, [user.id]).get(user.id))
    data["tokenKind"] = identity.kind
    if identity.kind == "session":
        data["csrfToken"] = csrf_token_for(request.app.state.secret_key, identity.token_id)
    return envelope.success(data)


@router.get("/me", summary="Who the caller is")
def me(
    request: Request,
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    return _me(request, identity, session)


@router.get("/users/me", summary="Who the caller is (ML Lab)")
def users_me(
    request: Request,
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    return _me(request, identity, session)


# -- users ------------------------------------------------------------------------------


def _user_not_found(username: str) -> ApiError:
    return ApiError(404, f"User {username!r} was not found.", code="not_found")


def _find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.lower()))
    if user is None:
        raise _user_not_found(username)
    return user


def _visible_user(session: Session, identity: Identity, username: str) -> User:
    """The user, when the caller may see them (an admin, or the user themself). Anyone
    else gets the answer of a user who does not exist: a 403 would tell them who does."""
    found = _find_user(session, username)
    if not identity.is_admin and found.id != identity.user_id:
        raise _user_not_found(username)
    return found


@router.get("/users", summary="All users (admin)")
def list_users(
    _: Identity = Depends(require_admin), session: Session = Depends(db_session, scope="function")
) -> dict:
    users = session.scalars(select(User).order_by(User.username)).all()
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
    if raw:
        try:
            body = NewUser.model_validate(raw)
        except ValueError as exc:
            raise ApiError(
                400,
                "Send JSON {'username': ..., 'password': ... (at least "
                f"{MIN_PASSWORD_LENGTH} characters), 'admin': false}}.",
            ) from exc
    else:
        if not username or not password:
            raise ApiError(400, "Give 'username' and 'password' (JSON body or query).")
        _check_password(password)
        body = NewUser(username=username, password=password, admin=admin)
    name = normalize_name(body.username, what="username")
    if session.scalar(select(User.id).where(User.username == name)):
        raise ApiError(409, f"User {name!r} already exists.", code="conflict")
    user = User(username=name, password_hash=hash_password(body.password), is_admin=body.admin)
    session.add(user)
    session.flush()
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
    found = _find_user(session, user)
    if found.id == identity.user_id:
        raise ApiError(400, "You cannot delete yourself.")
    left = revoke_left_services(session, found.username)
    session.delete(found)
    # Committed before the services restart: their new tokens must not name the user.
    session.commit()
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


# -- members ------------------------------------------------------------------------------


def _managed_project(request: Request, session: Session, identity: Identity, name: str) -> Project:
    """The project, when the caller may change its members (owner or admin). A project
    the caller cannot even open answers as if absent (see `project_not_found`)."""
    found = find_project(session, name)
    if not authority(request).can_open(identity, found):
        raise project_not_found(found.name)
    if not authority(request).can_manage(identity, found):
        raise Forbidden("Only the project's owner or an admin can change its members.")
    return found


def _membership(session: Session, user: User, project: Project) -> Membership | None:
    return session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.project_id == project.id)
    )


def _add_member(
    request: Request, session: Session, identity: Identity, user: str, project: str
) -> dict:
    found_project = _managed_project(request, session, identity, project)
    found_user = _find_user(session, user)
    if _membership(session, found_user, found_project) is None:
        session.add(Membership(user_id=found_user.id, project_id=found_project.id))
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
    found_user = _find_user(session, user)
    existing = _membership(session, found_user, found_project)
    if existing is not None:
        session.delete(existing)
    revoked, left = 0, []
    if not (found_user.is_admin or found_project.owner_id == found_user.id):
        revoked = revoke_member_tokens(session, found_user.id, found_project.id)
        left = revoke_left_services(session, found_user.username, found_project.id)
    session.commit()
    authority(request).forget()
    done = end_services(request, left, services)
    return envelope.success(
        None,
        message=f"{found_user.username} removed from {found_project.name}; "
        f"{revoked} project token(s) they made revoked; {done}.",
    )


# -- passwords ----------------------------------------------------------------------------


def _check_presence(
    session: Session,
    identity: Identity,
    found: User,
    current_password: str | None,
    *,
    need_current: bool,
) -> None:
    """A password changes only when the caller proves to be its owner's person now: by
    their own current password, or by a fresh log-in session (`FRESH_LOGIN`). A
    long-lived token alone (an API token, an old or refreshed session) never suffices,
    or a leaked script token would become the account."""
    own = found.id == identity.user_id
    if current_password is not None:
        caller = found if own else session.get(User, identity.user_id)
        if caller is None or not verify_password(caller.password_hash, current_password):
            raise ApiError(400, "Your current password is wrong.", code="wrong_password")
        return
    if need_current:
        raise ApiError(
            400, "Send your current password as 'currentPassword'.", code="wrong_password"
        )
    if not is_fresh_login(session, identity):
        minutes = int(FRESH_LOGIN.total_seconds() // 60)
        raise Forbidden(
            "Changing a password needs your current password ('currentPassword', PUT) or "
            f"a session from a log-in of the last {minutes} minutes (GET /api/auth/login); "
            "an API token or an older session alone cannot."
        )


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
    _check_presence(session, identity, found, current_password, need_current=need_current)
    found.password_hash = hash_password(password)
    sessions = session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == found.id,
            ApiToken.kind == "session",
            ApiToken.revoked_at.is_(None),
            ApiToken.id != identity.token_id,
        )
    ).all()
    for token in sessions:
        revoke(session, token)
    ttl = request.app.state.settings.session_ttl
    issued = issue_token(session, "session", user_id=found.id, name=LOGIN_SESSION, expires_in=ttl)
    session.flush()
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


# -- API tokens -------------------------------------------------------------------------


@router.get("/tokens", summary="Your API tokens (user and project tokens you created)")
def list_tokens(
    identity: Identity = Depends(require_user),
    session: Session = Depends(db_session, scope="function"),
) -> dict:
    rows = session.execute(
        select(ApiToken, Project.name)
        .outerjoin(Project, ApiToken.project_id == Project.id)
        .where(
            ApiToken.user_id == identity.user_id,
            ApiToken.kind.in_(("user", "project")),
            ApiToken.revoked_at.is_(None),
            ApiToken.service_id.is_(None),
        )
        .order_by(ApiToken.created_at)
    ).all()
    now = datetime.now(UTC)
    return envelope.success(
        [token_out(t, project=p) for t, p in rows if t.expires_at is None or t.expires_at > now]
    )


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
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != identity.user_id and not identity.is_admin):
        raise ApiError(404, f"Token {token_id!r} was not found.", code="not_found")
    revoke(session, token)
    session.flush()
    authority(request).forget()
    return envelope.success(None, message="Token revoked.")
