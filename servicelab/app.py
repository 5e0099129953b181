"""`create_app(settings)`: wires the database, auth, runtime, proxy, API routers and web UI."""

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
from servicelab.api.deploy_policy import isolation_notice
from servicelab.api.deps import require_admin
from servicelab.api.errors import install_error_handlers
from servicelab.auth import TokenAuthority
from servicelab.bootstrap import ensure_admin, load_secret_key, prepare_data_dir
from servicelab.config import Settings, resolve_instance_id
from servicelab.db import Database
from servicelab.logins import LoginGate
from servicelab.proxy import ProxyApp, ProxySettings, render_metrics
from servicelab.proxy.dates import DateHeader
from servicelab.runtimes.select import make_runtime
from servicelab.services import ServiceManager
from servicelab.services.leader import make_leadership
from servicelab.web import mount_web

log = logging.getLogger("servicelab")


def create_app(
    settings: Settings | None = None,
    *,
    on_admin_password: Callable[[str], None] | None = None,
) -> Any:
    """Build the lab's ASGI application.

    `on_admin_password` receives the generated admin password on the very first start
    (the `serve` command prints it); it is called at most once per lab.
    """
    settings = settings or Settings()
    prepare_data_dir(settings.data_dir)
    settings.instance_id = resolve_instance_id(settings)
    # First: on SQLite a second process on the same database stops here, with a message.
    leadership = make_leadership(settings.resolved_database_url, settings.data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    admin_password = settings.admin_password.get_secret_value() if settings.admin_password else None
    generated = ensure_admin(db, admin_password)
    if generated and on_admin_password:
        on_admin_password(generated)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for start in app.state.on_startup:
            await start()
        try:
            yield
        finally:
            for stop in reversed(app.state.on_shutdown):
                await stop()
            db.dispose()

    app = FastAPI(
        title="servicelab",
        summary="Deploy ML models and other code as secured web services.",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.secret_key = load_secret_key(settings.data_dir)
    app.state.authority = TokenAuthority(db, settings.auth_cache_ttl)
    app.state.login_gate = LoginGate(base_delay=settings.login_backoff)
    if leadership.shared:
        # Revocations reach the other lab processes on the database at once (docs/replicas.md).
        app.state.authority.publish = leadership.publish
    #: async callables taking a project name, run before a project is deleted
    app.state.project_cleanups = []
    app.state.on_startup = []
    app.state.on_shutdown = []

    services = ServiceManager(
        db, make_runtime(settings), app.state.authority, settings, leadership=leadership
    )
    app.state.services = services
    # Runtime isolation (issue 12): said at start, and shown by the UI.
    app.state.isolation_notice = isolation_notice(settings, services.runtime)
    if app.state.isolation_notice:
        log.warning("%s", app.state.isolation_notice)
    elif note := getattr(services.runtime, "isolation_note", None):
        log.info("%s", note)
    app.state.on_startup.append(services.start)
    app.state.on_shutdown.append(services.close)
    app.state.project_cleanups.append(services.delete_project)

    install_error_handlers(app)
    app.include_router(admin_api.router)
    app.include_router(auth_api.router)
    app.include_router(projects_api.router)
    app.include_router(services_api.router)
    app.include_router(services_api.volumes_router)
    app.include_router(service_metrics_api.router)
    files_api.install(app)
    app.include_router(models_api.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        # `leader`: whether this process reconciles (one of the lab's processes does).
        return JSONResponse(envelope.success({"status": "ok", "leader": leadership.is_leader}))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_admin)])
    def metrics() -> Response:
        return Response(render_metrics(), media_type="text/plain; version=0.0.4")

    mount_web(app)
    app.add_middleware(DateHeader)

    proxy_settings = ProxySettings(
        allowed_origins=list(settings.allowed_origins),
        read_timeout=settings.proxy_read_timeout or None,
        connect_timeout=settings.proxy_connect_timeout,
        trust_forwarded_headers=settings.trust_proxy_headers,
        service_domain=settings.service_domain,
        lab_url=settings.endpoint,
        secret_key=app.state.secret_key,
    )
    proxy = ProxyApp(
        app,
        LabResolver(services),
        LabAuthorizer(app.state.authority),
        proxy_settings,
        codes=LabCodes(db),
    )
    if settings.proxy == "nginx":
        from servicelab.proxy.nginx_lab import attach_nginx

        return attach_nginx(app, proxy, settings, services)
    return proxy
