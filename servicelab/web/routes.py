"""The web UI: server-rendered pages (Jinja2) with htmx fragments that refresh themselves.

Pages only *read*, through the same functions the JSON API uses (so a page shows exactly
what the API answers). Every change (deploy, stop, delete, upload, tokens...) is sent by the
browser to the JSON API itself with the session's `X-CSRF-Token`, so the API's checks and
error messages are the only ones. The two exceptions are log-in and log-out, which set and
clear the session cookie and must work as plain HTML forms.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from sqlalchemy.orm import Session

from lab_client.records import to_datetime
from servicelab.api import auth as auth_api
from servicelab.api import projects as projects_api
from servicelab.api import services as services_api
from servicelab.api.deps import (
    ProjectContext,
    authority,
    db_session,
    lab,
    project_context,
    refuse_cross_origin,
    require_admin,
)
from servicelab.api.errors import ApiError
from servicelab.api.member_services import deployed_by
from servicelab.auth import AuthFailed, Forbidden, Identity
from servicelab.errors import KNOWN, problem
from servicelab.proxy.origins import OriginPolicy, split_host
from servicelab.runtimes.limits import Limits, ShownLimit, shown_limits
from servicelab.spec import Resources

from .session import (
    LoginRequired,
    base_path,
    csrf_token,
    login_url,
    safe_next,
    session_identity,
    web_user,
)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

#: What a page answers with, besides its HTML: no framing (clickjacking), scripts and
#: styles only from the lab itself (the htmx file is served by the lab, not a CDN).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# -- formatting helpers for templates ---------------------------------------------------


def human_size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns


def short_time(value: int | str | None) -> str:
    """`2026-11-27 11:30` (UTC) from an API timestamp; `iso_time` goes in a `title`."""
    parsed = to_datetime(value)
    if parsed is None:
        return "—" if value in (None, "") else str(value)
    return parsed.strftime("%Y-%m-%d %H:%M")


def iso_time(value: int | str | None) -> str:
    """The whole time, for a tooltip: the API answers epoch milliseconds."""
    parsed = to_datetime(value)
    return parsed.isoformat(timespec="seconds") if parsed else ""


templates.env.filters["size"] = human_size
templates.env.filters["when"] = short_time
templates.env.filters["iso"] = iso_time


# -- errors as pages ----------------------------------------------------------------------


def _error_status(exc: Exception) -> tuple[int, str]:
    """Status and message from the one table the API uses too."""
    found = problem(exc)
    return (found.status, found.message) if found else (500, "Internal error.")


class WebRoute(APIRoute):
    """A UI route: a missing session becomes a log-in redirect, an API error a page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            fragment = request.headers.get("hx-request") == "true"
            try:
                return await handler(request)
            except (LoginRequired, AuthFailed):
                target = login_url(request)
                if fragment:
                    return Response(status_code=401, headers={"HX-Redirect": target})
                return RedirectResponse(target, status_code=303)
            except KNOWN as exc:
                status, message = _error_status(exc)
                if fragment:
                    return HTMLResponse(
                        f'<p class="notice error">{escape(message)}</p>', status_code=status
                    )
                identity = session_identity(request)
                return render(
                    request,
                    "error.html",
                    {"status": status, "message": message},
                    identity,
                    status_code=status,
                )

        return route


router = APIRouter(route_class=WebRoute, include_in_schema=False)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    identity: Identity | None,
    status_code: int = 200,
) -> HTMLResponse:
    base = base_path(request)
    full = {
        "base": base,
        "user": identity,
        "csrf": csrf_token(request, identity) if identity else "",
        "isolation_notice": lab(request).isolation_notice,
        **context,
    }
    hint = _origin_hint(request, identity)
    if hint:
        full["origin_hint"] = hint
    response = templates.TemplateResponse(request, template, full, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    services = _service_origins_source(request)
    if services:
        # After log-in the browser may be sent on to a service's origin (the handshake),
        # and `form-action` also governs where a form's redirects may lead.
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = csp.replace(
            "form-action 'self'", f"form-action 'self' {services}"
        )
    if hint:
        response.set_cookie(
            ORIGIN_HINT_COOKIE, "1", max_age=365 * 24 * 3600, httponly=True, samesite="lax"
        )
    return response


def _service_origins_source(request: Request) -> str:
    """A CSP source for every service origin of this lab (`http://*.localhost:8080`)."""
    host = request.headers.get("host", "")
    domain = OriginPolicy(lab(request).settings.service_domain).domain_for(host)
    if domain is None:
        return ""
    _, port = split_host(host)
    return f"{request.url.scheme}://*.{domain}{port}"


#: Set once an admin was told that services are served sandboxed, so it is told once.
ORIGIN_HINT_COOKIE = "servicelab_origin_hint"


def _origin_hint(request: Request, identity: Identity | None) -> str:
    """The lab's host when an admin should learn that no service origins can be formed
    here (a non-loopback host and no SERVICELAB_SERVICE_DOMAIN), else ""."""
    if identity is None or not identity.is_admin or request.cookies.get(ORIGIN_HINT_COOKIE):
        return ""
    host = request.headers.get("host", "")
    policy = OriginPolicy(lab(request).settings.service_domain)
    return host if policy.domain_for(host) is None else ""


def _services(request: Request, ctx: ProjectContext) -> list[dict[str, Any]]:
    """The project's services as the API answers them (secrets masked), from a sync route."""
    listed: list[dict[str, Any]] = from_thread.run(services_api.list_services, request, ctx)["data"]
    return listed


def _files(request: Request, project: str) -> list[dict[str, Any]]:
    """Every version of every file of the project, newest version first."""
    from servicelab.api.files import file_out

    store = lab(request).files

    infos = from_thread.run(partial(store.list, project, all_versions=True))
    infos.sort(key=lambda i: (i.data_type, i.name, -i.version))
    return [file_out(i) for i in infos]


# -- log-in and log-out -------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse(f"{base_path(request)}/projects", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    target = safe_next(next, base_path(request))
    if session_identity(request) is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", {"next": target, "error": None, "username": ""}, None)


@router.post("/login")
def login_submit(
    request: Request,
    username: str = Form(default=""),
    password: str = Form(default=""),
    next: str = Form(default=""),
    session: Session = Depends(db_session, scope="function"),
) -> Response:
    target = safe_next(next, base_path(request))
    refuse_cross_origin(request)  # no page of another origin logs anyone in
    try:
        if not username or not password:
            raise ApiError(400, "Give your username and password.")
        user = auth_api.check_credentials(session, username, password, request)
    except ApiError as exc:
        context = {"next": target, "error": exc.message, "username": username}
        return render(request, "login.html", context, None, status_code=exc.status)
    response = RedirectResponse(target, status_code=303)
    auth_api.start_session(request, response, session, user)
    # Commit before answering: the browser follows the redirect at once, and a token looked
    # up before its row is committed would be cached as unknown (a log-in that bounces).
    session.commit()
    return response


@router.post("/logout")
def logout_submit(
    request: Request,
    csrf_token_field: str = Form(default="", alias="csrf_token"),
    session: Session = Depends(db_session, scope="function"),
) -> Response:
    identity = session_identity(request)
    response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
    if identity is None:
        return response
    refuse_cross_origin(request)
    # Log-out ends a session: without this check any site could log the user out.
    if csrf_token_field != csrf_token(request, identity):
        raise Forbidden("Missing or wrong CSRF token: reload the page and log out again.")
    auth_api.end_session(request, response, session)
    # Likewise: the revocation must be committed, and the cache emptied after that, before
    # the next request can come.
    session.commit()
    authority(request).forget()
    return response


# -- projects -----------------------------------------------------------------------------


@router.get("/projects")
def projects_page(
    request: Request,
    identity: Identity = Depends(web_user),
    session: Session = Depends(db_session, scope="function"),
) -> Response:
    projects = projects_api.list_projects(identity, session)["data"]
    return render(request, "projects.html", {"projects": projects, "nav": "projects"}, identity)


def _web_project(
    project: str,
    request: Request,
    identity: Identity = Depends(web_user),
    session: Session = Depends(db_session, scope="function"),
) -> ProjectContext:
    return project_context(project, request, identity, session)


@router.get("/projects/{project}")
def project_page(request: Request, ctx: ProjectContext = Depends(_web_project)) -> Response:
    services = _services(request, ctx)
    context = {
        "project": projects_api.get_project(ctx)["data"],
        "can_manage": authority(request).can_manage(ctx.identity, ctx.project),
        "services": services,
        "deployed_by": deployed_by(ctx.session, ctx.project),
        "files": _files(request, ctx.name),
        "data_types": _data_types(),
        "nav": "projects",
    }
    return render(request, "project.html", context, ctx.identity)


def _data_types() -> list[str]:
    from servicelab.files import DATA_TYPES

    return list(DATA_TYPES)


@router.get("/projects/{project}/services-table")
def services_fragment(request: Request, ctx: ProjectContext = Depends(_web_project)) -> Response:
    context = {"project": {"name": ctx.name}, "services": _services(request, ctx)}
    return render(request, "_services.html", context, ctx.identity)


@router.get("/projects/{project}/data-table")
def data_fragment(request: Request, ctx: ProjectContext = Depends(_web_project)) -> Response:
    context = {"project": {"name": ctx.name}, "files": _files(request, ctx.name)}
    return render(request, "_files.html", context, ctx.identity)


# -- one service ----------------------------------------------------------------------------


def _service(request: Request, ctx: ProjectContext, service: str) -> dict[str, Any]:
    """The service as the API answers it (found by the same names the API takes)."""
    found: dict[str, Any] = from_thread.run(services_api.get_service, request, service, ctx)["data"]
    return found


def _limits(request: Request, service: dict[str, Any]) -> list[ShownLimit]:
    """The limits the service's instances run with: its spec's, else the lab's defaults
    (which the page names as such: a user must know what their service may use)."""
    asked = service.get("resources") or {}
    resources = Resources(cpus=asked.get("cpus"), memory=asked.get("memory"))
    return shown_limits(resources, Limits.from_settings(lab(request).settings))


@router.get("/projects/{project}/services/{service}")
def service_page(
    request: Request, service: str, ctx: ProjectContext = Depends(_web_project)
) -> Response:
    shown = _service(request, ctx, service)
    context = {
        "project": {"name": ctx.name},
        "service": shown,
        "limits": _limits(request, shown),
        "nav": "projects",
    }
    return render(request, "service.html", context, ctx.identity)


@router.get("/projects/{project}/services/{service}/status")
def service_status_fragment(
    request: Request, service: str, ctx: ProjectContext = Depends(_web_project)
) -> Response:
    context = {"project": {"name": ctx.name}, "service": _service(request, ctx, service)}
    return render(request, "_service_status.html", context, ctx.identity)


# -- the user's tokens and the admin's users ------------------------------------------------


@router.get("/tokens")
def tokens_page(
    request: Request,
    identity: Identity = Depends(web_user),
    session: Session = Depends(db_session, scope="function"),
) -> Response:
    context = {
        "tokens": auth_api.list_tokens(identity, session)["data"],
        "projects": projects_api.list_projects(identity, session)["data"],
        "nav": "tokens",
    }
    return render(request, "tokens.html", context, identity)


@router.get("/account")
def account_page(request: Request, identity: Identity = Depends(web_user)) -> Response:
    """The signed-in user's own settings: for now, changing the password."""
    return render(request, "account.html", {"nav": "account"}, identity)


@router.get("/admin/users")
def users_page(
    request: Request,
    identity: Identity = Depends(web_user),
    session: Session = Depends(db_session, scope="function"),
) -> Response:
    users = auth_api.list_users(require_admin(identity), session)["data"]
    return render(request, "users.html", {"users": users, "nav": "users"}, identity)


def mount_web(app: FastAPI) -> None:
    """Serve the UI from `app`: the pages at `/`, the static files at `/static`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="web-static")
