"""Who is looking at a UI page, where to send them back after log-in, and the CSRF token.

The UI authenticates by the session cookie only (a browser has nothing else). A page that
needs a user raises `LoginRequired`; the web router turns that into a redirect to the login
page (or, for an htmx fragment, into `HX-Redirect`, since a fragment must not render a whole
login page into a table).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import Request

from servicelab.api.deps import csrf_token_for, lab
from servicelab.auth import AuthFailed, Identity, TokenAuthority
from servicelab.credentials import COOKIE_NAME


class LoginRequired(Exception):
    """No valid session: the user must log in, then come back to `next_path`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def base_path(request: Request) -> str:
    """The prefix the lab is mounted under (`""` at the root), for building links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def safe_next(value: str | None, base: str = "") -> str:
    """`value` when it is a path on this site, else the projects page.

    Only local paths are honoured, so that a crafted `/login?next=https://evil` cannot turn
    the lab into an open redirect: `//host`, `/\\host` and anything with a scheme or host
    are refused.
    """
    default = f"{base}/projects"
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(c in value for c in "\r\n\t"):
        return default
    return value


def login_url(request: Request, next_path: str | None = None) -> str:
    base = base_path(request)
    target = next_path if next_path is not None else request.url.path
    if request.url.query and next_path is None:
        target += "?" + request.url.query
    return f"{base}/login?next={quote(target, safe='/')}"


def session_identity(request: Request) -> Identity | None:
    """The identity of the session cookie, or None when there is none that a person holds."""
    token = request.cookies.get(COOKIE_NAME)
    authority: TokenAuthority = lab(request).authority
    try:
        identity = authority.identify(token)
    except AuthFailed:
        return None
    # A project token (set as cookie by opening a service with `?lab_token=`) acts for one
    # project only: it cannot drive the UI, which is a person's.
    if identity.is_project_token or identity.user_id is None:
        return None
    return identity


def web_user(request: Request) -> Identity:
    """FastAPI dependency: the logged-in user, or a redirect to the login page."""
    identity = session_identity(request)
    if identity is None:
        raise LoginRequired(request.url.path)
    request.state.identity = identity
    return identity


def csrf_token(request: Request, identity: Identity) -> str:
    """The session's CSRF token: what the API's `X-CSRF-Token` check expects."""
    return csrf_token_for(lab(request).secret_key, identity.token_id)
