"""`servicelab services deploy|ls|show|logs|restart|stop|start|rm|open`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import sys
import time
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from lab_client import Environment, LabApiError, Record
from servicelab.code_source import DATA_KEY, VCS_PREFIXES
from servicelab.spec import is_port

from .common import (
    CliError,
    Exit,
    JsonOpt,
    ProjectOpt,
    environment,
    err_console,
    print_json,
    project_of,
    say,
    table,
    when,
)

app = typer.Typer(help="Deploy and manage services.", no_args_is_help=True)

ServiceArg = Annotated[str, typer.Argument(help="The service's name.", show_default=False)]
POLL_INTERVAL = 0.5
#: Log lines shown when a service fails to start.
FAILURE_LOG_LINES = 20


# -- deploy -----------------------------------------------------------------------------


def code_source(value: str) -> str:
    """EXECUTE_CODE from --code: a VCS URL or data key as given, a local path made absolute.

    A local path that exists wins over a data key of the same spelling.
    """
    if value.startswith(VCS_PREFIXES):
        return value
    path = Path(value).expanduser()
    if path.exists():
        return str(path.resolve())
    if DATA_KEY.match(value):
        return value
    raise CliError(
        f"--code {value!r}: no such file or folder. Give a local path, a VCS URL "
        "(git+https://host/repo.git) or a data key (datasets/code.zip).",
        Exit.USAGE,
    )


def parse_env(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs; a bare KEY takes its value from this shell, as `docker run -e` does."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise CliError(f"-e {pair!r}: use KEY=VALUE with a variable name as KEY.", Exit.USAGE)
        if not sep:
            if key not in os.environ:
                raise CliError(f"-e {key}: give KEY=VALUE, or set {key} in your shell.", Exit.USAGE)
            value = os.environ[key]
        env[key] = value
    return env


def derive_name(image: str | None, code: str | None) -> str:
    """The name the lab would give a service without --name (it needs one for PUT)."""
    from servicelab.spec import InvalidName, name_from_code, name_from_image

    try:
        return name_from_code(code) if code else name_from_image(image or "")
    except InvalidName as exc:
        raise CliError(f"{exc} Pass --name.", Exit.USAGE) from None


def build_spec(
    image: str | None,
    code: str | None,
    env: dict[str, str],
    ports: list[int],
    cpus: float | None,
    memory: str | None,
    gpus: int | None,
    keep_prefix: bool | None = None,
) -> dict[str, Any]:
    # An update keeps what it does not name: no -e keeps the service's environment.
    spec: dict[str, Any] = {"env": env} if env else {}
    if image:
        spec["image"] = image
    else:
        spec["code"] = code
        if ports and "PORT" not in env:
            env["PORT"] = str(ports[0])  # a code service listens on $PORT
            spec["env"] = env
    if ports:
        spec["ports"] = ports
        spec["connectionPort"] = ports[0]
    resources = {k: v for k, v in {"cpus": cpus, "memory": memory, "gpus": gpus}.items() if v}
    if resources:
        spec["resources"] = resources
    if keep_prefix is not None:
        spec["stripPrefix"] = not keep_prefix
    return spec


def check_usage(image: str | None, code: str | None, ports: list[int]) -> None:
    """What the command line itself can tell is wrong; the lab checks the rest."""
    if bool(image) == bool(code):
        raise CliError("Give either --image IMAGE or --code PATH|URL|KEY.", Exit.USAGE)
    for port in ports:
        if not is_port(port):  # spec.py's one rule for a port
            raise CliError(f"--port {port}: give a port between 1 and 65535.", Exit.USAGE)


def refuse_existing(lab: Environment, project: str, name: str) -> None:
    """Without --update, deploying over an existing service is a mistake to point out."""
    try:
        lab.lab_handler.lab_api.get_service(project, name)
    except LabApiError as exc:
        if exc.status != 404:
            raise
    else:
        raise CliError(
            f"Service {name!r} exists in project {project!r}: add --update to change "
            "it, or choose another --name.",
            Exit.API_ERROR,
        )


@app.command()
def deploy(
    image: Annotated[
        str | None, typer.Option("--image", "-i", help="Docker image to run.", show_default=False)
    ] = None,
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            "-c",
            help="Code to run: a local path, a VCS URL (git+https://...) or a data key.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Service name (default: from the image or code)."),
    ] = None,
    env_pairs: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="Environment variable KEY=VALUE (repeatable)."),
    ] = None,
    ports: Annotated[
        list[int] | None,
        typer.Option("--port", help="Port the service listens on (repeatable; first is main)."),
    ] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPU limit, e.g. 0.5.")] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help="Memory limit, e.g. 512m or 2g.")
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="Number of GPUs.")] = None,
    keep_prefix: Annotated[
        bool | None,
        typer.Option(
            "--keep-prefix/--strip-prefix",
            help="Send requests with the whole route prefix (JupyterLab, Panel and apps with "
            "a base-URL setting need it), or remove it (the default for a new service; an "
            "update keeps the service's choice).",
            show_default=False,
        ),
    ] = None,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Update the service if it exists already; what is not given is kept.",
        ),
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once instead of waiting until healthy.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until the service is healthy.")
    ] = 300.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy an image or code as a service and wait until it is healthy."""
    check_usage(image, code, ports or [])
    source = code_source(code) if code else None
    env_values = parse_env(env_pairs or [])
    service_name = name or derive_name(image, source)
    lab = environment(project)
    proj = project_of(lab)
    if not update:
        refuse_existing(lab, proj, service_name)
    spec = build_spec(image, source, env_values, list(ports or []), cpus, memory, gpus, keep_prefix)
    service = put_with_progress(lab, proj, service_name, spec, quiet=as_json)
    if not no_wait:
        service = wait_healthy(lab, proj, service.name, timeout, quiet=as_json)
    if as_json:
        print_json(service)
        return
    state = "is running" if service.status == "running" else f"is {service.status}"
    url = service_url(service)
    say(f"Service [bold]{service.name}[/] {state}" + (f" at {url}" if url else "."))


def put_with_progress(
    lab: Environment, project: str, name: str, spec: dict, *, quiet: bool = False
) -> Record:
    """PUT the spec; on a terminal, show what the lab reports meanwhile (an image pull
    takes a while, and the lab writes its progress into the service's reason)."""
    api = lab.lab_handler.lab_api
    console = err_console()
    if quiet or not console.is_terminal:
        return api.put_service(project, name, spec)
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        console.status(f"Deploying {name} ...") as display,
    ):
        request = pool.submit(api.put_service, project, name, spec)
        while True:
            try:
                return request.result(timeout=POLL_INTERVAL)
            except concurrent.futures.TimeoutError:
                pass
            with contextlib.suppress(LabApiError):
                service = api.get_service(project, name)
                reason = service.get("reason")
                display.update(
                    f"{name}: [bold]{service.status}[/]" + (f" ({reason})" if reason else "")
                )


def wait_healthy(
    lab: Environment, project: str, name: str, timeout: float, *, quiet: bool = False
) -> Record:
    """Poll until the service is running and healthy; fail (exit 5) when it fails, stops or
    the deadline passes, showing why and the last log lines.

    A Rich spinner on stderr shows the status and its reason, on a terminal only.
    """
    api = lab.lab_handler.lab_api
    deadline = time.monotonic() + timeout
    console = err_console()
    display = console.status(f"Starting {name} ...") if not quiet and console.is_terminal else None
    if display:
        display.start()
    try:
        while True:
            service = api.get_service(project, name)
            status, reason = service.status, service.get("reason")
            detail = status + (f": {reason}" if reason else "")
            if status == "running" and service.get("isHealthy"):
                return service
            if status in ("failed", "stopped"):
                if display:
                    display.stop()
                _failed(lab, project, name, detail)
            if time.monotonic() >= deadline:
                if display:
                    display.stop()
                _failed(lab, project, name, f"is not healthy after {timeout:g} s ({detail})")
            if display:
                display.update(f"{name}: [bold]{status}[/]" + (f" ({reason})" if reason else ""))
            time.sleep(POLL_INTERVAL)
    finally:
        if display:
            display.stop()


def _failed(lab: Environment, project: str, name: str, what: str) -> None:
    lines = ""
    with contextlib.suppress(LabApiError):
        lines = lab.lab_handler.lab_api.get_service_logs(project, name, tail=FAILURE_LOG_LINES)
    if lines.strip():
        err_console().print(f"Last log lines of {name}:", highlight=False)
        sys.stderr.write(lines if lines.endswith("\n") else lines + "\n")
    raise CliError(f"Service {name!r} {what}", Exit.UNHEALTHY)


def service_url(service: Record, port: int | None = None) -> str | None:
    ports = service.get("ports") or []
    if port is not None:
        for entry in ports:
            if entry.get("port") == port:
                return str(entry["url"])
        raise CliError(
            f"Service {service.name!r} has no port {port}; its ports: "
            f"{', '.join(str(p.get('port')) for p in ports) or 'none'}.",
            Exit.NOT_FOUND,
        )
    if service.get("endpoint"):
        return str(service["endpoint"])
    return str(ports[0]["url"]) if ports else None


# -- inspect ----------------------------------------------------------------------------


@app.command("ls")
def list_services(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The project's services."""
    lab = environment(project)
    services = lab.lab_handler.lab_api.get_services(project_of(lab))
    if as_json:
        print_json(services)
        return
    table(
        ["NAME", "STATUS", "HEALTHY", "SOURCE", "URL", "MODIFIED", "REASON"],
        [
            (
                s.name,
                s.status,
                "yes" if s.get("isHealthy") else "no",
                s.get("dockerImage") if not s.get("code") else s.get("code"),
                service_url(s),
                when(s.get("modifiedAt")),
                s.get("reason"),
            )
            for s in services
        ],
    )


@app.command("show")
def show(service: ServiceArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """One service: status, source, ports, configuration (secrets masked)."""
    lab = environment(project)
    found = lab.lab_handler.lab_api.get_service(project_of(lab), service)
    if as_json:
        print_json(found)
        return
    rows: list[tuple[str, Any]] = [
        ("name", found.name),
        ("status", found.status + (f" ({found.reason})" if found.get("reason") else "")),
        ("healthy", "yes" if found.get("isHealthy") else "no"),
        ("source", found.get("code") or found.get("dockerImage")),
        ("runtime", found.get("runtime")),
        ("url", service_url(found)),
        ("restarts", found.get("restarts")),
        ("started", when(found.get("startedAt"))),
        ("modified", when(found.get("modifiedAt"))),
    ]
    rows += [(f"env {k}", v) for k, v in (found.get("configuration") or {}).items()]
    table(["", ""], rows)


@app.command("open")
def open_service(
    service: ServiceArg,
    port: Annotated[int | None, typer.Option("--port", help="Which port (default: main).")] = None,
    browser: Annotated[
        bool, typer.Option("--browser", "-b", help="Also open it in a web browser.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the service's URL on its own origin, for browsers (they log in there by the
    lab's handshake; scripts send 'Authorization: Bearer <token>' to it or to the path)."""
    lab = environment(project)
    found = lab.lab_handler.lab_api.get_service(project_of(lab), service)
    url = service_url(found, port) if port is not None or not found.get("url") else found["url"]
    if not url:
        raise CliError(f"Service {service!r} has no HTTP port.", Exit.NOT_FOUND)
    if as_json:
        print_json({"name": found.name, "url": url})
    else:
        typer.echo(url)
    if browser:
        webbrowser.open(url)


# -- logs -------------------------------------------------------------------------------


@app.command()
def logs(
    service: ServiceArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until it is deleted.")
    ] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Lines since an ISO time or a duration: 10m.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The service's output. With -f, follows it across restarts until it is deleted."""
    lab = environment(project)
    proj = project_of(lab)
    api = lab.lab_handler.lab_api
    if not follow:
        text = api.get_service_logs(proj, service, tail=tail, since=since)
        if as_json:
            print_json(text.splitlines())
        else:
            sys.stdout.write(text)
        return
    api.get_service(proj, service)  # a clear 404 before streaming
    while True:
        try:
            for line in api.follow_service_logs(proj, service, tail=tail, since=since):
                _emit_line(line, as_json)
        except LabApiError as exc:
            # Deleted between two streams: the row was still there (and not stopped)
            # when the last stream ended, and gone when the next one was asked for.
            if exc.status == 404:
                return
            raise
        # The stream ends when the service's process does: a restart goes on, a deletion
        # ends the command.
        ended = datetime.now(UTC)
        while True:
            try:
                found = api.get_service(proj, service)
            except LabApiError as exc:
                if exc.status == 404:
                    return
                raise
            if found.status != "stopped":
                break
            time.sleep(1.0)
        tail, since = None, ended.isoformat()
        time.sleep(POLL_INTERVAL)


def _emit_line(line: str, as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(line) + "\n")
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- actions ----------------------------------------------------------------------------


def _action(
    action: str, service: str, project: str | None, wait: bool, timeout: float, as_json: bool
) -> None:
    lab = environment(project)
    proj = project_of(lab)
    api = lab.lab_handler.lab_api
    do = {"stop": api.stop_service, "start": api.start_service, "restart": api.restart_service}
    found = do[action](proj, service)
    if wait and action != "stop":
        found = wait_healthy(lab, proj, found.name, timeout, quiet=as_json)
    if as_json:
        print_json(found)
    else:
        past = {"stop": "stopped", "start": "started", "restart": "restarted"}[action]
        say(f"Service [bold]{found.name}[/] {past} (status: {found.status}).")


WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until the service is healthy.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")]


@app.command()
def restart(
    service: ServiceArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restart a service (its data is kept)."""
    _action("restart", service, project, wait, timeout, as_json)


@app.command()
def stop(service: ServiceArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a service, keeping it and its data."""
    _action("stop", service, project, False, 0, as_json)


@app.command()
def start(
    service: ServiceArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a stopped service."""
    _action("start", service, project, wait, timeout, as_json)


@app.command("rm")
def remove(
    service: ServiceArg,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete its /data.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a service. Its /data is kept unless --purge."""
    lab = environment(project)
    lab.lab_handler.lab_api.delete_service(project_of(lab), service, purge=purge)
    if as_json:
        print_json({"deleted": service, "purged": purge})
    else:
        kept = "" if purge else " Its data is kept (add --purge to delete it)."
        say(f"Service [bold]{service}[/] deleted.{kept}")
