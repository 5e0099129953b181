"""The composition root: `build_lab(settings)` builds one typed `Lab` (database, auth,
runtime behind the service manager, file store); `create_app(lab)` serves it: the API
routers, the web UI and the authenticating proxy in front of them.

Every part of the lab is made here and nowhere else; the routes receive the `Lab`
(`servicelab.api.deps.lab`), the CLI builds it through `create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from servicelab import envelope
from servicelab.access import LabAuthorizer, LabCodes, LabResolver
from servicelab.api import admin as admin_api
from servicelab.api import auth as auth_api
from servicelab.api import files as files_api
from servicelab.api import models as models_api
from servicelab.api import projects as projects_api
from servicelab.api import service_metrics as service_metrics_api
from servicelab.api import services as services_api
from servicelab.api.deps import require_admin
from servicelab.api.errors import install_error_handlers
from servicelab.auth import TokenAuthority
from servicelab.auth.authenticators import load_authenticator
from servicelab.bootstrap import ensure_admin, load_secret_key, prepare_data_dir
from servicelab.config import Settings, resolve_instance_id
from servicelab.db import Database
from servicelab.deploy import isolation_notice
from servicelab.files import open_file_store
from servicelab.lab import Lab
from servicelab.proxy import ProxyApp, ProxySettings, render_metrics
from servicelab.proxy.dates import DateHeader
from servicelab.runtimes.select import make_runtime
from servicelab.services import ServiceManager
from servicelab.services.leader import make_leadership
from servicelab.web import mount_web

log = logging.getLogger("servicelab")

__all__ = ["Lab", "build_lab", "create_app"]


# -- the lab --------------------------------------------------------------------------------


def build_lab(settings: Settings, *, on_admin_password: Callable[[str], None] | None = None) -> Lab:
    """Build every part of a lab from its settings, once; the database is migrated and the
    admin user created.

    `on_admin_password` receives the generated admin password on the very first start
    (the `serve` command prints it); it is called at most once per lab.
    """
    prepare_data_dir(settings.data_dir)
    settings.instance_id = resolve_instance_id(settings)
    # First: on SQLite a second process on the same database stops here, with a message.
    leadership = make_leadership(settings.resolved_database_url, settings.data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    _first_admin(db, settings, on_admin_password)
    authority = TokenAuthority(db, settings.auth_cache_ttl)
    if leadership.shared:
        # Revocations reach the other lab processes on the database at once (docs/replicas.md).
        authority.publish = leadership.publish
    manager = ServiceManager(db, make_runtime(settings), authority, settings, leadership=leadership)
    files = open_file_store(settings)  # SERVICELAB_FILE_STORE, found by its entry point
    lab = Lab(
        settings=settings,
        db=db,
        secret_key=load_secret_key(settings.data_dir),
        authority=authority,
        authenticator=load_authenticator(settings),
        leadership=leadership,
        manager=manager,
        files=files,
        # Runtime isolation (issue 12): said at start, and shown by the UI.
        isolation_notice=isolation_notice(settings, manager.runtime),
    )
    lab.on_startup.append(manager.start)
    lab.on_shutdown.append(manager.close)
    lab.project_cleanups.append(manager.delete_project)
    lab.project_cleanups.append(files.delete_project)
    _say_isolation(lab)
    return lab


def _first_admin(
    db: Database, settings: Settings, on_admin_password: Callable[[str], None] | None
) -> None:
    given = settings.admin_password.get_secret_value() if settings.admin_password else None
    generated = ensure_admin(db, given)
    if generated and on_admin_password:
        on_admin_password(generated)


def _say_isolation(lab: Lab) -> None:
    if lab.isolation_notice:
        log.warning("%s", lab.isolation_notice)
    elif note := lab.runtime.isolation_note:
        log.info("%s", note)


# -- the ASGI app -----------------------------------------------------------------------------


def create_app(
    settings: Lab | Settings | None = None,
    *,
    on_admin_password: Callable[[str], None] | None = None,
) -> Any:
    """Build the lab's ASGI application: the API and the UI behind the proxy.

    Given a `Lab`, serve it; given `Settings` (or none: from the environment), build
    the lab first (`build_lab`, which `on_admin_password` is passed to).
    """
    if isinstance(settings, Lab):
        lab = settings
    else:
        lab = build_lab(settings or Settings(), on_admin_password=on_admin_password)
    app = _fastapi_app(lab)
    install_error_handlers(app)
    _include_api(app)
    _include_lab_routes(app, lab)
    mount_web(app)
    app.add_middleware(DateHeader)
    return _behind_proxy(app, lab)


def _fastapi_app(lab: Lab) -> FastAPI:
    """The FastAPI app holding `lab` (`app.state.lab`), started and stopped with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await lab.start()
        try:
            yield
        finally:
            await lab.stop()

    app = FastAPI(
        title="servicelab",
        summary="Deploy ML models and other code as secured web services.",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.lab = lab
    return app


def _include_api(app: FastAPI) -> None:
    app.include_router(admin_api.router)
    app.include_router(auth_api.router)
    app.include_router(projects_api.router)
    app.include_router(services_api.router)
    app.include_router(services_api.volumes_router)
    app.include_router(service_metrics_api.router)
    files_api.install(app)
    app.include_router(models_api.router)


def _include_lab_routes(app: FastAPI, lab: Lab) -> None:
    """The lab's own: its health (for load balancers) and its metrics (Prometheus)."""

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        # `leader`: whether this process reconciles (one of the lab's processes does).
        return JSONResponse(envelope.success({"status": "ok", "leader": lab.leadership.is_leader}))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_admin)])
    def metrics() -> Response:
        return Response(render_metrics(), media_type="text/plain; version=0.0.4")


def _behind_proxy(app: FastAPI, lab: Lab) -> Any:
    """The authenticating proxy in front of `app`, and nginx in front of both when
    SERVICELAB_PROXY=nginx."""
    settings = lab.settings
    proxy_settings = ProxySettings(
        allowed_origins=list(settings.allowed_origins),
        read_timeout=settings.proxy_read_timeout or None,
        connect_timeout=settings.proxy_connect_timeout,
        trust_forwarded_headers=settings.trust_proxy_headers,
        service_domain=settings.service_domain,
        lab_url=settings.endpoint,
        secret_key=lab.secret_key,
    )
    proxy = ProxyApp(
        app,
        LabResolver(lab.manager),
        LabAuthorizer(lab.authority),
        proxy_settings,
        codes=LabCodes(lab.db),
    )
    if settings.proxy == "nginx":
        from servicelab.proxy.nginx_lab import attach_nginx

        return attach_nginx(app, proxy, settings, lab.manager)
    return proxy
