"""FastAPI dependencies: the database session, the caller's identity, project access.

The token is found by `servicelab.credentials.find_token` (header, then cookie, then URL
parameter). A request authenticated by the session cookie must come from the lab's own
origin (`Sec-Fetch-Site` / `Origin`): a cookie is sent by the browser on its own, also for
a page of another origin (a service's, on a sibling host of the same site). A
state-changing one must also carry the session's CSRF token in `X-CSRF-Token`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab.auth import Forbidden, Identity, TokenAuthority
from servicelab.credentials import TokenSource, find_token
from servicelab.db import Project
from servicelab.lab import Lab
from servicelab.proxy.origins import from_own_origin
from servicelab.spec import InvalidName, normalize_name

from .errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


def lab(request: Request) -> Lab:
    """The lab this request is served by (built once by `servicelab.app.build_lab`)."""
    found: Lab = request.app.state.lab
    return found


def db_session(request: Request) -> Iterator[Session]:
    with lab(request).db.session() as session:
        yield session


def authority(request: Request) -> TokenAuthority:
    return lab(request).authority


def csrf_token_for(secret_key: bytes, token_id: str) -> str:
    return hmac.new(secret_key, token_id.encode(), hashlib.sha256).hexdigest()


def lab_origins(request: Request) -> set[str]:
    """The origins the lab's pages are served from: this request's scheme and host, the
    public URL, and the configured extra origins."""
    settings = lab(request).settings
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        own.add(f"{parts.scheme}://{parts.netloc}".lower())
    own.update(o.rstrip("/").lower() for o in settings.allowed_origins)
    return own


def refuse_cross_origin(request: Request) -> None:
    """Refuse a request authenticated by the lab cookie that another origin made."""
    headers = request.headers
    if not from_own_origin(
        headers.get("sec-fetch-site"), headers.get("origin"), lab_origins(request)
    ):
        raise Forbidden(
            "Cross-origin use of the lab session refused: the lab's cookie works on the "
            "lab's own pages only (API clients send 'Authorization: Bearer <token>')."
        )


def current_identity(request: Request) -> Identity:
    found = find_token(request.headers.get("authorization"), request.cookies, request.query_params)
    if found and found.source is TokenSource.COOKIE:
        refuse_cross_origin(request)
    identity = authority(request).identify(found.token if found else None)
    request.state.by_cookie = bool(found and found.source is TokenSource.COOKIE)
    if request.state.by_cookie and request.method not in SAFE_METHODS:
        check_csrf(request, identity)
    request.state.identity = identity
    return identity


def check_csrf(request: Request, identity: Identity) -> None:
    expected = csrf_token_for(lab(request).secret_key, identity.token_id)
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given, expected):
        raise Forbidden(
            "Missing or wrong CSRF token: send the X-CSRF-Token header from the login "
            "response with requests authenticated by cookie."
        )


def require_user(identity: Identity = Depends(current_identity)) -> Identity:
    if identity.is_project_token or identity.user_id is None:
        raise Forbidden("A project token cannot do this: use a user's token or log in.")
    return identity


def require_admin(identity: Identity = Depends(current_identity)) -> Identity:
    if not identity.is_admin:
        raise Forbidden("Only an admin can do this.")
    return identity


def project_not_found(name: str) -> ApiError:
    """The one answer for a project that does not exist and for one the caller may not
    open: a 403 for the second would tell anyone which project names exist."""
    return ApiError(404, f"Project {name!r} was not found.", code="not_found")


def find_project(session: Session, name: str) -> Project:
    try:
        normalized = normalize_name(name, what="project name")
    except InvalidName as exc:
        raise project_not_found(name) from exc
    project = session.scalar(select(Project).where(Project.name == normalized))
    if project is None:
        raise project_not_found(normalized)
    return project


@dataclass
class ProjectContext:
    """A project the caller may open, with who the caller is."""

    project: Project
    identity: Identity
    session: Session

    @property
    def name(self) -> str:
        return self.project.name


def project_context(
    project: str,
    request: Request,
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session, scope="function"),
) -> ProjectContext:
    found = find_project(session, project)
    if not authority(request).can_open(identity, found):
        raise project_not_found(found.name)
    return ProjectContext(found, identity, session)


def header_identity(request: Request, identity: Identity = Depends(require_user)) -> Identity:
    """The caller of one of ML Lab's state-changing GET routes (they mint tokens, change
    passwords or members): only a token sent in the Authorization header counts. A
    browser sends cookies (and follows links carrying `lab_token`) on its own, so a
    cookie-only GET, e.g. an <img> or a link on another site, must change nothing."""
    found = find_token(request.headers.get("authorization"), request.cookies, {})
    if found is None or found.source is not TokenSource.HEADER:
        raise Forbidden(
            "This GET route changes state: send your token in the Authorization header, "
            "or use the POST/PUT route."
        )
    return identity
