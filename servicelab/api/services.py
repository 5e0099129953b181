"""Services of a project, on ML Lab's `/api/projects/{project}/services` paths and beyond.

Every entry point ends in one `ServiceSpec` handed to the deploy pipeline
(`servicelab.deploy`), which checks it and hands it to the `ServiceManager`: ML Lab's
`POST ?image=&name=` with the environment as body, and `PUT .../{service}` with a whole
spec (create or update, idempotent). The routes only parse and answer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from servicelab import envelope
from servicelab.deploy import Deployer
from servicelab.errors import NotFound
from servicelab.services import ServiceManager, ServiceRow, service_path, service_url_env
from servicelab.spec import (
    MAX_PORTS,
    MIN_CPUS,
    MIN_MEMORY,
    PULL_POLICIES,
    RESTART_POLICIES,
    HealthCheck,
    Resources,
    ServiceSpec,
    is_code_runner_image,
    name_from_code,
    name_from_image,
    normalize_name,
    same_image,
)

from .deps import ProjectContext, authority, lab, project_context
from .errors import ApiError
from .serializers import browser_base, epoch_ms, source_out

router = APIRouter(prefix="/api/projects/{project}/services", tags=["services"])

MASK = "********"


def manager(request: Request) -> ServiceManager:
    return lab(request).manager


# -- input ------------------------------------------------------------------------------

_MEMORY = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,9})?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: str | int | None) -> int | None:
    """Bytes from `536870912`, `"512m"`, `"512MiB"` or `"1g"`. Only the unit is read
    here; the bounds are `spec.normalize`'s, the same for every entry point."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    match = _MEMORY.match(value)
    if not match:
        raise ValueError(f"memory {value!r} is not a size such as 512m or 2g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


# The request models below check types only: defaults come from spec.py's dataclasses and
# every bound from `spec.normalize` (run first by the deploy pipeline), so a bad value gets
# the same 400 with the same words through POST, PUT, the models route and the CLI.
_HEALTH = HealthCheck()
_SPEC = ServiceSpec(project="", name="")


class ResourcesIn(BaseModel):
    cpus: float | None = Field(default=None, description=f"At least {MIN_CPUS}")
    memory: int | str | None = Field(
        default=None, description=f"Bytes, or a size like 512m (at least {MIN_MEMORY} bytes)"
    )
    gpus: int | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        return parse_memory(value)


class HealthIn(BaseModel):
    path: str | None = Field(
        default=_HEALTH.path,
        description="A path answering below 400, such as /health; null: TCP check",
    )
    port: int | None = _HEALTH.port
    interval: float = _HEALTH.interval
    timeout: float = _HEALTH.timeout
    retries: int = _HEALTH.retries
    start_period: float = Field(default=_HEALTH.start_period, alias="startPeriod")
    model_config = ConfigDict(populate_by_name=True)


class SpecIn(BaseModel):
    """A whole service spec, as `PUT .../services/{service}` takes it."""

    image: str | None = None
    code: str | None = Field(default=None, description="Local path, VCS URL or data key")
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list, description=f"At most {MAX_PORTS}")
    connection_port: int | None = Field(default=None, alias="connectionPort")
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    replicas: int = _SPEC.replicas
    health: HealthIn = Field(default_factory=HealthIn)
    restart: str = Field(default=_SPEC.restart, description=" | ".join(RESTART_POLICIES))
    strip_prefix: bool = Field(default=_SPEC.strip_prefix, alias="stripPrefix")
    secret_keys: list[str] = Field(default_factory=list, alias="secretKeys")
    pull_policy: str = Field(
        default=_SPEC.pull_policy, alias="pullPolicy", description=" | ".join(PULL_POLICIES)
    )
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def to_spec(self, project: str, name: str) -> ServiceSpec:
        env = dict(self.env)
        code = self.code or None
        if not self.image and not code:
            code = env.pop("EXECUTE_CODE", None) or None
        memory = self.resources.memory
        return ServiceSpec(
            project=project,
            name=name,
            image=self.image,
            code=code,
            env=env,
            ports=list(self.ports),
            connection_port=self.connection_port,
            resources=Resources(
                cpus=self.resources.cpus,
                memory=memory if isinstance(memory, int) else None,
                gpus=self.resources.gpus,
            ),
            replicas=self.replicas,
            health=HealthCheck(**self.health.model_dump()),
            restart=self.restart,
            strip_prefix=self.strip_prefix,
            secret_keys=list(self.secret_keys),
            pull_policy=self.pull_policy,
        )


def _name_for(name: str | None, image: str | None, code: str | None) -> str:
    if name:
        return normalize_name(name, what="service name")
    if image:
        return name_from_image(image)
    if code:
        return name_from_code(code)
    raise ApiError(400, "Give the service a 'name'.")


# -- output -----------------------------------------------------------------------------


def service_out(row: ServiceRow, project: str, request: Request) -> dict[str, Any]:
    """The service object: ML Lab's field names beside servicelab's own; secrets masked."""
    spec = row.spec
    settings = lab(request).settings
    base = service_path(project, row.name)
    configuration: dict[str, Any] = {
        "LAB_ENDPOINT": settings.endpoint,
        "LAB_API_TOKEN": MASK,
        "LAB_PROJECT": project,
        "LAB_SERVICE_PATH": base,
        **service_url_env(
            project,
            row.name,
            spec,
            endpoint=settings.endpoint,
            service_domain=settings.service_domain,
        ),
    }
    if spec.code:
        configuration["EXECUTE_CODE"] = source_out(spec.code)
    configuration.update({k: MASK if spec.is_secret(k) else v for k, v in spec.env.items()})
    # Browsers open a service on its own origin; API clients use `endpoint` (the path).
    browse = browser_base(request, project, row.name)
    ports = [{"port": p, "path": f"{base}{p}/", "url": f"{browse}{base}{p}/"} for p in spec.ports]
    return {
        "name": row.name,
        "project": project,
        "dockerImage": spec.image or (settings.runtime_image if row.runtime == "docker" else None),
        "dockerName": spec.key,
        "dockerId": docker_id(row, spec),
        "code": source_out(spec.code),
        "runtime": row.runtime,
        "status": row.phase.value,
        "reason": row.reason,
        "isHealthy": bool(row.healthy),
        "desired": row.desired,
        "restarts": row.restarts,
        "connectionPort": spec.connection_port,
        "exposedPorts": list(spec.ports),
        "ports": ports,
        "endpoint": f"{settings.endpoint}{base}{spec.connection_port}/"
        if spec.connection_port
        else None,
        "url": f"{browse}{base}{spec.connection_port}/" if spec.connection_port else None,
        "configuration": configuration,
        "labels": {
            "servicelab.project": project,
            "servicelab.service": row.name,
            "servicelab.runtime": row.runtime,
        },
        "resources": {
            "cpus": spec.resources.cpus,
            "memory": spec.resources.memory,
            "gpus": spec.resources.gpus,
        },
        "replicas": spec.replicas,
        "restartPolicy": spec.restart,
        "stripPrefix": spec.strip_prefix,
        "health": {"path": spec.health.path, "port": spec.health.port},
        "createdBy": row.created_by,
        "createdAt": epoch_ms(row.created_at),
        "modifiedAt": epoch_ms(row.modified_at),
        "startedAt": epoch_ms(row.started_at),
        "adminLink": None,
        "featureType": None,
    }


def docker_id(row: ServiceRow, spec: ServiceSpec) -> str:
    """ML Lab's `dockerId`: the container's ID on Docker; elsewhere the instance has no
    ID of its own and is named by its key (the `dockerName`)."""
    container = (row.handle or {}).get("container_id")
    return str(container) if container else spec.key


async def find_service(request: Request, ctx: ProjectContext, ref: str) -> ServiceRow:
    """A service by its name, or, as ML Lab's clients look them up, by its `dockerName`
    (`<project>--<service>`) or its `dockerId` (the whole container ID or a prefix of at
    least 12 characters, as `docker ps` shows it)."""
    services = manager(request)
    try:
        return await services.get(ctx.project, ref)
    except NotFound as exc:
        not_found = exc
    prefix = f"{ctx.name}--"
    if ref.startswith(prefix):
        with contextlib.suppress(NotFound):
            return await services.get(ctx.project, ref[len(prefix) :])
    if len(ref) >= 12:
        for row in await services.list_services(ctx.project):
            container = str((row.handle or {}).get("container_id") or "")
            if container and container.startswith(ref.lower()):
                return row
    raise not_found


# -- routes -----------------------------------------------------------------------------


@router.get("", summary="The project's services")
async def list_services(request: Request, ctx: ProjectContext = Depends(project_context)) -> dict:
    rows = await manager(request).list_services(ctx.project)
    return envelope.success([service_out(r, ctx.name, request) for r in rows])


@router.post(
    "", summary="Deploy a service (ML Lab): image, or EXECUTE_CODE in the body", status_code=201
)
async def deploy_service(
    request: Request,
    image: str | None = Query(default=None, description="Docker image to run"),
    name: str | None = Query(default=None, description="Service name; from the image if absent"),
    body: dict[str, Any] | None = Body(default=None, description="Environment variables"),
    ctx: ProjectContext = Depends(project_context),
) -> JSONResponse:
    env = {str(k): _env_value(k, v) for k, v in (body or {}).items()}
    code = None
    if not image or _runs_code(request, image, env):
        code = env.pop("EXECUTE_CODE", None)
        if not code:
            raise ApiError(
                400,
                "Give an 'image' query parameter, or EXECUTE_CODE in the body to run code "
                "(a local path, a VCS URL such as git+https://host/repo.git, or a data key).",
            )
        image = None
    strip_prefix = not _flag(KEEP_PREFIX_VARIABLE, env.pop(KEEP_PREFIX_VARIABLE, "false"))
    service_name = _name_for(name, image, code)
    spec = SpecIn(image=image, code=code, env=env, stripPrefix=strip_prefix).to_spec(
        ctx.name, service_name
    )
    return await _deploy(request, ctx, spec, replace_existing=False)


#: A reserved variable of ML Lab's POST (its body is only environment variables): `true`
#: keeps the route prefix, as `stripPrefix: false` does in a PUT. It is not passed on.
KEEP_PREFIX_VARIABLE = "LAB_KEEP_PREFIX"


def _flag(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{key} must be true or false, not {value!r}.")


def _runs_code(request: Request, image: str, env: dict[str, str]) -> bool:
    settings = lab(request).settings
    runtime = manager(request).runtime.name
    if not is_code_runner_image(image, runtime_image=settings.runtime_image, runtime=runtime):
        return False
    # The runtime image always means code (without EXECUTE_CODE that is a clear 400); a
    # workspace image only when it is given code to run.
    return bool(env.get("EXECUTE_CODE")) or same_image(image, settings.runtime_image)


def _env_value(key: Any, value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ApiError(400, f"The value of {key!r} must be a string, number or boolean.")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@router.put("/{service}", summary="Create or update a service from a whole spec (idempotent)")
async def put_service(
    request: Request,
    service: str,
    body: SpecIn,
    ctx: ProjectContext = Depends(project_context),
) -> JSONResponse:
    name = normalize_name(service, what="service name")
    try:
        existing: ServiceRow | None = await manager(request).get(ctx.project, name)
    except NotFound:
        existing = None
    if existing is not None:
        body = merged_spec(existing.spec, body)
    return await _deploy(request, ctx, body.to_spec(ctx.name, name), replace_existing=True)


def spec_in(spec: ServiceSpec) -> dict[str, Any]:
    """A stored spec in the shape `SpecIn` takes (by field name)."""
    data = spec.to_dict()
    health = data.pop("health")
    data = {k: v for k, v in data.items() if k in SpecIn.model_fields}
    data["health"] = health
    return data


def merged_spec(old: ServiceSpec, update: SpecIn) -> SpecIn:
    """An update keeps every field it does not name: a PUT of only `{"image": ...}` does
    not reset the ports, the environment or the kept route prefix. Naming `image` or
    `code` replaces the other; `resources` and `health` merge field by field."""
    named = update.model_dump(exclude_unset=True)
    data = spec_in(old)
    if "image" in named or "code" in named:
        data["image"] = data["code"] = None
    for key in ("resources", "health"):
        if key in named:
            named[key] = {**data[key], **named[key]}
    data.update(named)
    return SpecIn.model_validate(data)


def deployer(request: Request) -> Deployer:
    """The deploy pipeline with this lab's parts (see servicelab.deploy)."""
    state = lab(request)
    return Deployer(manager(request), state.settings, state.files, authority(request))


async def deploy_checked(
    request: Request,
    ctx: ProjectContext,
    spec: ServiceSpec,
    *,
    replace_existing: bool,
    lab_code: bool = False,
) -> tuple[ServiceRow, bool]:
    """Every route that deploys goes through here, into `servicelab.deploy`'s pipeline."""
    return await deployer(request).deploy(
        ctx.identity, ctx.project, spec, replace_existing=replace_existing, lab_code=lab_code
    )


async def _deploy(
    request: Request, ctx: ProjectContext, spec: ServiceSpec, *, replace_existing: bool
) -> JSONResponse:
    row, created = await deploy_checked(request, ctx, spec, replace_existing=replace_existing)
    status, message = (201, "Deployed.") if created else (200, "Updated.")
    return JSONResponse(
        envelope.success(service_out(row, ctx.name, request), status=status, message=message),
        status_code=status,
    )


@router.get("/{service}", summary="One service")
async def get_service(
    request: Request, service: str, ctx: ProjectContext = Depends(project_context)
) -> dict:
    row = await find_service(request, ctx, service)
    return envelope.success(service_out(row, ctx.name, request))


@router.delete("/{service}", summary="Delete a service; its data is kept unless purge=true")
async def delete_service(
    request: Request,
    service: str,
    purge: bool = Query(default=False, description="Also delete the service's /data"),
    ctx: ProjectContext = Depends(project_context),
) -> dict:
    name = (await find_service(request, ctx, service)).name
    await manager(request).delete(ctx.project, name, purge=purge)
    kept = "" if purge else " Its data is kept (delete with purge=true to remove it)."
    return envelope.success(None, message=f"Service {name!r} deleted.{kept}")


_DONE = {"stop": "Stopped.", "start": "Started.", "restart": "Restarted."}


async def _action(request: Request, ctx: ProjectContext, service: str, action: str) -> dict:
    services = manager(request)
    do = {"stop": services.stop, "start": services.start_service, "restart": services.restart}
    name = (await find_service(request, ctx, service)).name
    row = await do[action](ctx.project, name)
    return envelope.success(service_out(row, ctx.name, request), message=_DONE[action])


@router.post("/{service}/stop", summary="Stop a service, keeping it and its data")
async def stop_service(
    request: Request, service: str, ctx: ProjectContext = Depends(project_context)
) -> dict:
    return await _action(request, ctx, service, "stop")


@router.post("/{service}/start", summary="Start a stopped service")
async def start_service(
    request: Request, service: str, ctx: ProjectContext = Depends(project_context)
) -> dict:
    return await _action(request, ctx, service, "start")


@router.post("/{service}/restart", summary="Restart a service")
async def restart_service(
    request: Request, service: str, ctx: ProjectContext = Depends(project_context)
) -> dict:
    return await _action(request, ctx, service, "restart")


#: Bounds of the log parameters: beyond them no log holds anything, and the numbers
#: would overflow dates and buffers.
MAX_TAIL = 1_000_000
MAX_SINCE_AGO = 100 * 365 * 86400.0
_EPOCH_LIMITS = (0.0, 253402300799.0)  # 1970 .. 9999-12-31


def parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 time, a Unix time, or a duration ago such as `90s`, `10m`, `2h`."""
    if not value:
        return None
    hint = f"since={value!r}: give an ISO 8601 time, a Unix time or a duration like 10m."
    match = re.fullmatch(r"(\d{1,15}(?:\.\d{1,9})?)([smhd])", value.strip())
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        if seconds > MAX_SINCE_AGO:
            raise ApiError(400, f"since={value!r}: give a duration of at most 100 years.")
        return datetime.now(UTC) - timedelta(seconds=seconds)
    if re.fullmatch(r"\d{1,15}(?:\.\d{1,9})?", value.strip()):
        stamp = float(value)
        if not _EPOCH_LIMITS[0] <= stamp <= _EPOCH_LIMITS[1]:
            raise ApiError(400, f"since={value!r}: a Unix time must be between 0 and year 9999.")
        return datetime.fromtimestamp(stamp, UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(400, hint) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/{service}/logs", summary="The service's stdout and stderr")
async def service_logs(
    request: Request,
    service: str,
    tail: int | None = Query(default=None, ge=0, le=MAX_TAIL, description="Only the last N lines"),
    since: str | None = Query(default=None, description="ISO time, Unix time or 10m"),
    follow: bool = Query(default=False, description="Keep streaming new lines (text/plain)"),
    ctx: ProjectContext = Depends(project_context),
) -> Any:
    services = manager(request)
    since_time = parse_since(since)
    row = await find_service(request, ctx, service)
    lines = services.logs(row, tail=tail, since=since_time, follow=follow)
    wants_text = "text/plain" in request.headers.get("accept", "")
    if follow or wants_text:

        async def stream() -> AsyncIterator[bytes]:
            async for line in lines:
                yield (line + "\n").encode()

        return StreamingResponse(
            stream(), media_type="text/plain; charset=utf-8", headers={"X-Accel-Buffering": "no"}
        )
    collected = [line async for line in lines]
    # ML Lab returned the logs as one string; it stays that way for its clients.
    return envelope.success("\n".join(collected) + ("\n" if collected else ""))


volumes_router = APIRouter(prefix="/api/projects/{project}/volumes", tags=["services"])


@volumes_router.get("", summary="Data kept from deleted services (by service name)")
async def list_kept_data(request: Request, ctx: ProjectContext = Depends(project_context)) -> dict:
    return envelope.success(await manager(request).kept_data(ctx.project))


@volumes_router.delete("/{service}", summary="Delete the data kept from a deleted service")
async def purge_kept_data(
    request: Request, service: str, ctx: ProjectContext = Depends(project_context)
) -> dict:
    name = normalize_name(service, what="service name")
    if name not in await manager(request).kept_data(ctx.project):
        raise ApiError(404, f"No data is kept for a deleted service {name!r}.", code="not_found")
    await manager(request).purge_kept_data(ctx.project, name)
    return envelope.success(None, message=f"Data of {name!r} deleted.")
