"""`servicelab serve`: run the lab."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from servicelab.config import Settings
from servicelab.services.leader import AnotherLabRunning

from .lab_server import LabServer
from .log_output import write_access_log
from .redaction import RedactSecrets
from .workers import is_worker, reuse_port_socket, run_workers

console = Console(stderr=False, highlight=False)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quicker_log_records() -> None:
    """Leave out of every log record what the lab's format never prints: the thread, the
    process and the caller's file and line (a walk up the stack): a sixth of a record's
    cost. (The logging HOWTO's "Optimization" section names these switches.)"""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def redact_log_handlers() -> None:
    """Put `RedactSecrets` on every handler of the root and uvicorn loggers (after
    uvicorn configured its own)."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "servicelab")
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def _print_first_login(settings: Settings, password: str | None) -> None:
    endpoint = settings.endpoint
    shown = password or "$SERVICELAB_ADMIN_PASSWORD"
    console.print(f"\n[bold]servicelab[/] is starting on {endpoint}")
    if password:
        console.print(
            f"  A user [bold]admin[/] was created with the password [bold]{password}[/]\n"
            "  It is shown only this once: keep it somewhere safe."
        )
    console.print(
        "  Log in and get a token:\n"
        f"    curl -su admin:{shown} {endpoint}/api/auth/login\n"
        "  List your projects with it:\n"
        f"    curl -sH 'Authorization: Bearer <token>' {endpoint}/api/projects\n"
        f"  Web UI: {endpoint}/   API docs: {endpoint}/api/docs\n",
        soft_wrap=True,
    )


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind. [env: SERVICELAB_HOST]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind. [env: SERVICELAB_PORT]")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the database, data and local services. [env: SERVICELAB_DATA_DIR]"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL (default: SQLite in the data dir). [env: SERVICELAB_DATABASE_URL]"
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="auto, local, docker, kubernetes, or a runtime another package declares "
            "in the entry-point group servicelab.runtimes. [env: SERVICELAB_RUNTIME]"
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Lab processes sharing the port (SO_REUSEPORT), each serving API, UI and "
            "proxy, one reconciling; needs PostgreSQL. See docs/replicas.md.",
        ),
    ] = 1,
) -> None:
    """Run the lab: API, web UI and the authenticating proxy for services."""
    from servicelab.bootstrap import LAB_UMASK

    # Before anything is created: the database, its journal, the secret key, project
    # files and service logs then are readable by the lab's user only.
    os.umask(LAB_UMASK)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "database_url": database_url,
            "runtime": runtime,
            "log_level": log_level,
        }.items()
        if v is not None
    }
    settings = parse_settings(overrides)
    set_up_logging(settings)
    check_workers(workers, settings)
    app = build_app(settings)
    if workers > 1:
        del app  # the parent only migrated the database and created the admin
        settings_env = {f"SERVICELAB_{k.upper()}": str(v) for k, v in overrides.items()}
        raise typer.Exit(run_workers(workers, settings_env))
    run(app, settings)


def parse_settings(overrides: dict[str, Any]) -> Settings:
    """The settings from the environment and the command line's options; a bad value is
    a usage error that names it."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(problems) from None


def set_up_logging(settings: Settings) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    quicker_log_records()
    write_access_log(LOG_FORMAT)


def check_workers(workers: int, settings: Settings) -> None:
    """Refuse `--workers` where several lab processes cannot work."""
    if workers > 1 and not settings.resolved_database_url.startswith("postgresql"):
        raise typer.BadParameter(
            "--workers needs PostgreSQL (SERVICELAB_DATABASE_URL=postgresql+psycopg://...): "
            "SQLite serves one lab process.",
            param_hint="--workers",
        )
    if workers > 1 and settings.proxy == "nginx":
        raise typer.BadParameter(
            "--workers goes with the embedded proxy: with SERVICELAB_PROXY=nginx, nginx's "
            "own workers already use every core.",
            param_hint="--workers",
        )


def build_app(settings: Settings) -> Any:
    """Build the lab and its ASGI app; on the very first start, print how to log in
    with the generated admin password (shown this once)."""
    from servicelab.app import build_lab, create_app

    generated: list[str] = []
    try:
        lab = build_lab(settings, on_admin_password=generated.append)
    except AnotherLabRunning as exc:
        raise typer.BadParameter(str(exc), param_hint="SERVICELAB_DATA_DIR") from None
    if not is_worker():
        _print_first_login(settings, generated[0] if generated else None)
    generated.clear()
    return create_app(lab)


def run(app: Any, settings: Settings) -> None:
    """Serve `app` with uvicorn until the lab is stopped."""
    config = uvicorn_config(app, settings)
    redact_log_handlers()
    # A deadline for a request's headers, which uvicorn lacks (lab_server.py).
    server = LabServer(
        config,
        header_timeout=settings.header_timeout,
        max_waiting=settings.max_waiting_connections,
    )
    if is_worker():
        server.run(sockets=[reuse_port_socket(settings.host, settings.port)])
    else:
        server.run()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    listen: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if settings.proxy == "nginx":
        from servicelab.proxy.nginx_lab import lab_socket

        # nginx holds the public port; the lab listens on a socket only nginx can reach
        # (its folder is the lab user's alone), so nginx's X-Forwarded-* are the truth.
        socket_path = lab_socket(settings)
        socket_path.unlink(missing_ok=True)
        listen = {"uds": str(socket_path), "forwarded_allow_ips": "*"}
    return uvicorn.Config(
        app,
        **listen,
        loop="uvloop",
        http="httptools",
        # uvicorn's access log prints query strings, where a `lab_token` may be: the lab
        # writes its own access log without them.
        access_log=False,
        log_level=settings.log_level,
        # X-Forwarded-* from any client would let it pose as another address or as https.
        proxy_headers=settings.trust_proxy_headers or settings.proxy == "nginx",
        server_header=False,
        # A proxied response keeps its service's Date: servicelab.proxy.dates.
        date_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_timeout,
    )
