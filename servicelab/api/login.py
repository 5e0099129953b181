"""Log-in, log-out, refresh and "who am I", on ML Lab's `/api/auth` paths.

Who a person is, the configured authenticator decides (`servicelab.auth.authenticators`);
what a log-in gives them (a session, its cookie, a CSRF token) is decided here, the same
whichever authenticator it was.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.orm import Session

from servicelab import envelope
from servicelab.auth import LOGIN_SESSION, AuthFailed, Identity
from servicelab.auth import sessions as sessions_domain
from servicelab.auth.authenticators import Authenticator, LoginRefused
from servicelab.auth.users import user_by_id
from servicelab.credentials import COOKIE_NAME, TokenSource, find_token
from servicelab.db import User

from .deps import (
    authority,
    check_csrf,
    csrf_token_for,
    current_identity,
    db_session,
    header_identity,
    lab,
    refuse_cross_origin,
    require_user,
)
from .errors import ApiError
from .serializers import epoch_ms, last_activity, user_out

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Credentials(BaseModel):
    username: str
    password: str


def authenticator(request: Request) -> Authenticator:
    return lab(request).authenticator


async def verify_login(request: Request, session: Session, username: str, password: str) -> User:
    """The user, when the credentials are right: 401 when not, 429 when throttled (see
    servicelab.auth.logins). Unknown users cost the same hashing as known ones."""
    checker = authenticator(request)
    if not checker.password_form:
        raise ApiError(400, "This lab does not log in with a username and password.")
    client = request.client.host if request.client else ""
    try:
        user = await checker.authenticate(session, username, password, client=client)
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
    ttl = lab(request).settings.session_ttl
    issued = sessions_domain.issue_session(session, user.id, ttl, name)
    set_session_cookie(request, response, issued.secret, max_age=ttl)
    return {
        "token": issued.secret,
        "csrfToken": csrf_token_for(lab(request).secret_key, issued.token.id),
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


async def _posted_credentials(request: Request) -> Credentials:
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
        return Credentials.model_validate(raw)
    except ValueError as exc:
        raise ApiError(400, "Both 'username' and 'password' are required.") from exc


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
    creds = await _posted_credentials(request)
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
    if found and sessions_domain.end_session(session, found.token):
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
    user = user_by_id(session, identity.user_id)
    assert user is not None
    # Not a log-in: a refreshed session never stands for the password.
    data = start_session(request, response, session, user, name="refreshed")
    return envelope.success(data["token"])


def _me(request: Request, identity: Identity, session: Session) -> dict:
    if identity.user_id is None:
        return envelope.success(
            {"id": None, "project": identity.project_name, "tokenKind": identity.kind}
        )
    user = user_by_id(session, identity.user_id)
    assert user is not None
    data = user_out(user, active_at=last_activity(session, [user.id]).get(user.id))
    data["tokenKind"] = identity.kind
    if identity.kind == "session":
        data["csrfToken"] = csrf_token_for(lab(request).secret_key, identity.token_id)
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
