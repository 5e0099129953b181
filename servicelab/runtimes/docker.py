"""The Docker runtime: each service instance is a container on a Docker-compatible engine.

It talks to the engine of `DOCKER_HOST` (Docker, or Podman's Docker-compatible API)
through the `docker` SDK. The SDK blocks, so every call runs in a worker thread and
streams (logs, pulls) are read by a thread of their own (`docker_stream`).

What a service gets, following ML Lab's rules for service images:

- its image's `EXPOSE`d ports, published on `publish_host` (127.0.0.1) on ports the engine
  picks, or reached by container name on the project's network when the lab itself runs
  in a container on that network;
- `/data`, a named volume per service that outlives containers (restarts, updates,
  redeploys) until `delete_data`;
- one network per project, so that the services of a project can call each other;
- for code services from a local folder, that folder read-only at `/workspace/code` in
  the runtime image (`docker_code`); the path is one of the engine's host, so a lab that
  runs in a container must have the folder at the same path as the host;
- its image's `HEALTHCHECK`, run by the engine, or by this runtime where the engine does
  not (Podman without systemd).

Containers carry labels (`servicelab.instance`, `.project`, `.service`, `.key`), so that a
restarted lab finds its own running containers (`adopt`) and nobody else's. The engine
restarts nothing by itself: restarting failed instances with back-off is the manager's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest

from servicelab.runtimes.base import (
    DATA_DIR_ENV,
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeError_,
    RuntimeStatus,
    RuntimeUnavailable,
    SpecError,
)
from servicelab.runtimes.docker_code import CODE_PARENT, code_archive, code_mount, resolved_code
from servicelab.runtimes.docker_health import (
    HEALTHY,
    STARTING,
    UNHEALTHY,
    HealthConfig,
    HealthRunner,
    health_config,
)
from servicelab.runtimes.docker_rules import (
    PULL_POLICIES,
    check_resources,
    choose_connection_port,
    code_port,
    docker_name,
    explain,
    exposed_ports,
    mib,
    parse_time,
    pull_failed,
    pull_progress_line,
    start_error,
    timestamp,
)
from servicelab.runtimes.docker_stream import iterate_in_thread, split_lines
from servicelab.spec import Phase, ServiceSpec

T = TypeVar("T")

LABEL_INSTANCE = "servicelab.instance"
LABEL_PROJECT = "servicelab.project"
LABEL_SERVICE = "servicelab.service"
LABEL_KEY = "servicelab.key"

#: Where the service's volume is mounted, as ML Lab's best practices say.
DATA_MOUNT = "/data"

#: How long `address()` may reuse what it saw of a container: it is called for each
#: proxied request, and one inspect per request would make the engine the bottleneck.
ADDRESS_CACHE_SECONDS = 1.0
#: How often a starting container's HEALTHCHECK is run by us before the engine's first run.
EARLY_CHECK_INTERVAL = 0.5

#: How many stopped containers `status()` tells from vanished ones.
MAX_REMEMBERED_STOPS = 10_000

#: A DNS label (the container name on the project network) has at most 63 characters.
MAX_CONTAINER_NAME = 63


class DockerRuntime(Runtime):
    """Services as containers on a Docker-compatible engine."""

    name: ClassVar[str] = "docker"
    supports_images: ClassVar[bool] = True

    def __init__(
        self,
        instance_id: str,
        *,
        lab_in_container: bool = False,
        publish_host: str = "127.0.0.1",
        runtime_image: str = "servicelab/runtime:latest",
        name_prefix: str | None = None,
        lab_container: str | None = None,
        client: docker.DockerClient | None = None,
        api_timeout: float = 60.0,
        run_health_checks: bool | None = None,
    ) -> None:
        """
        instance_id: the value of the `servicelab.instance` label, telling this lab's
            containers and volumes from those of other labs on the same engine.
        lab_in_container: the lab runs in a container; services are reached by name on
            their project's network (which the lab's container joins) and not published.
        lab_container: the lab's own container (name or id) in that case; by default the
            host name, which Docker sets to the container's short id.
        runtime_image: the image that runs code services (`EXECUTE_CODE`).
        name_prefix: the start of every container, network and volume name; by default
            the instance id (the default lab's is "servicelab"), so that two labs on one
            engine never share a volume.
        client: a ready `docker.DockerClient` (closed by its owner, not by `close`); by
            default one from the environment (`DOCKER_HOST`...), made on first use.
        run_health_checks: True: run every HEALTHCHECK ourselves; False: never; None:
            only where the engine does not (Podman).
        """
        self.instance_id = instance_id
        self.lab_in_container = lab_in_container
        self.publish_host = publish_host
        self.runtime_image = runtime_image
        self.name_prefix = name_prefix or docker_name(instance_id)
        self.run_health_checks = run_health_checks
        #: container id -> (time of the last early check, whether it passed)
        self._early: dict[str, tuple[float, bool]] = {}
        self.lab_container = lab_container or (socket.gethostname() if lab_in_container else None)
        self.api_timeout = api_timeout
        self._client = client
        # A client given by the caller is the caller's to close.
        self._owns_client = client is None
        self._client_lock = asyncio.Lock()
        self._project_locks: dict[str, asyncio.Lock] = {}
        self._is_podman: bool | None = None
        self._health: dict[str, HealthRunner] = {}
        # Containers this runtime stopped and removed: their status is STOPPED, not
        # "vanished". Bounded, oldest forgotten first.
        self._stopped: dict[str, None] = {}
        self._inspect_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    # --- the engine -----------------------------------------------------------------

    @classmethod
    async def available(cls, timeout: float = 3.0) -> bool:
        """Whether a Docker-compatible engine answers at `DOCKER_HOST` within `timeout`."""

        def ping() -> bool:
            try:
                client = docker.from_env(timeout=int(max(1, timeout)))
            except Exception:
                return False
            try:
                return bool(client.ping())
            except Exception:
                return False
            finally:
                client.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(ping), timeout + 1)
        except TimeoutError:
            return False

    async def _docker(self) -> docker.DockerClient:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._call(
                        lambda: docker.from_env(timeout=int(self.api_timeout), max_pool_size=32)
                    )
        return self._client

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread; an engine that does not answer becomes
        RuntimeUnavailable."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc
        except docker.errors.APIError:
            raise
        except docker.errors.DockerException as exc:
            if "Error while fetching server API version" in str(exc):
                raise RuntimeUnavailable(
                    "The Docker engine does not answer; is it running and is DOCKER_HOST "
                    f"right? ({exc})"
                ) from exc
            raise

    async def _engine_is_podman(self) -> bool:
        if self._is_podman is None:
            client = await self._docker()
            version = await self._call(client.version)
            names = [c.get("Name", "") for c in version.get("Components") or []]
            self._is_podman = any("podman" in n.lower() for n in names)
        return self._is_podman

    # --- names ----------------------------------------------------------------------

    def network_name(self, project: str) -> str:
        return f"{self.name_prefix}-{project}"

    def volume_name(self, spec: ServiceSpec) -> str:
        # The key (`<project>--<service>`) and not `<project>-<service>`: project "a-b"
        # with service "c" and project "a" with service "b-c" must not share data.
        return f"{self.name_prefix}-{spec.key}-data"

    def _container_name(self, spec: ServiceSpec) -> str:
        suffix = secrets.token_hex(3)
        base = f"{self.name_prefix}-{spec.key}"[: MAX_CONTAINER_NAME - len(suffix) - 1]
        return f"{base.rstrip('-')}-{suffix}"

    def _labels(self, spec: ServiceSpec) -> dict[str, str]:
        return {
            LABEL_INSTANCE: self.instance_id,
            LABEL_PROJECT: spec.project,
            LABEL_SERVICE: spec.name,
            LABEL_KEY: spec.key,
        }

    # --- prepare --------------------------------------------------------------------

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        if bool(spec.image) == bool(spec.code):
            raise SpecError("A service needs either an image or code to run, and not both.")
        if spec.pull_policy not in PULL_POLICIES:
            raise SpecError(
                f"Unknown pull policy {spec.pull_policy!r}: use one of {', '.join(PULL_POLICIES)}."
            )
        check_resources(spec)
        if spec.code:
            # A local path must exist now, so that a typo is a 4xx and not a crash loop;
            # resolved here once, the service only ever gets this path (issue 12).
            spec = replace(spec, code=await asyncio.to_thread(resolved_code, spec.code))
        image = spec.image or self.runtime_image
        attrs = await self._ensure_image(image, spec.pull_policy, progress)
        if spec.code:
            # Code services listen on $PORT, by default 8091 (ML Lab's workspace),
            # whatever else the runtime image exposes.
            port = code_port(spec)
            ports = list(spec.ports) or [port]
            connection = spec.connection_port or port
        else:
            exposed = exposed_ports(attrs.get("Config"))
            ports = list(dict.fromkeys([*spec.ports, *exposed]))
            given = spec.connection_port or (spec.ports[0] if spec.ports else None)
            chosen = choose_connection_port(given, exposed)
            if chosen is None:
                raise SpecError(
                    f"Image {image} exposes no port and no port was given: add an EXPOSE "
                    "line for the HTTP port of the service to its Dockerfile, or give the "
                    "port when deploying."
                )
            connection = chosen
        if connection not in ports:
            ports.append(connection)
        for port in ports:
            if not 0 < port < 65536:
                raise SpecError(f"Port {port} is not a valid TCP port (1-65535).")
        return replace(spec, ports=ports, connection_port=connection)

    async def _ensure_image(
        self, image: str, policy: str, progress: ProgressCallback | None
    ) -> dict[str, Any]:
        """The image's attributes, pulled first as `policy` says."""
        client = await self._docker()
        if policy != "always":
            try:
                found = await self._call(client.images.get, image)
                return dict(found.attrs)
            except docker.errors.ImageNotFound:
                if policy == "never":
                    raise SpecError(
                        f"Image {image} not found on the Docker engine, and the pull policy "
                        "'never' forbids pulling it: build or load it there first."
                    ) from None
            except docker.errors.APIError as exc:
                raise SpecError(f"Invalid image {image!r}: {explain(exc)}") from exc
        await self._pull(image, policy, progress)
        try:
            found = await self._call(client.images.get, image)
        except docker.errors.ImageNotFound:
            raise SpecError(f"Image {image} not found after pulling it.") from None
        return dict(found.attrs)

    async def _pull(self, image: str, policy: str, progress: ProgressCallback | None) -> None:
        client = await self._docker()
        repository, tag = docker.utils.parse_repository_tag(image)
        if not tag:
            tag = "latest"
        elif "@" in image:  # a digest: the SDK wants it as the "tag"
            repository, tag = image.split("@", 1)
        if progress:
            progress(f"Pulling {image}")
        last: dict[str, str] = {}
        try:
            events = iterate_in_thread(
                lambda: client.api.pull(repository, tag=tag, stream=True, decode=True)
            )
            async for event in events:
                if "error" in event:
                    raise SpecError(pull_failed(image, str(event["error"]), policy))
                line = pull_progress_line(event, last)
                if line and progress:
                    progress(line)
        except docker.errors.APIError as exc:
            raise SpecError(pull_failed(image, explain(exc), policy)) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc

    # --- start ----------------------------------------------------------------------

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        if not spec.ports or spec.connection_port is None:
            spec = await self.prepare(spec, progress)
        client = await self._docker()
        image = spec.image or self.runtime_image
        environment = dict(env)
        environment[DATA_DIR_ENV] = DATA_MOUNT
        mount = await asyncio.to_thread(code_mount, spec.code) if spec.code else None
        if spec.code:
            environment["EXECUTE_CODE"] = mount.execute_code if mount else spec.code
            environment.setdefault("PORT", str(spec.connection_port))
        volume = await self._ensure_volume(spec)
        volumes = {volume: {"bind": DATA_MOUNT, "mode": "rw"}}
        kwargs: dict[str, Any] = {
            "name": self._container_name(spec),
            "environment": environment,
            "labels": self._labels(spec),
            "volumes": volumes,
            "detach": True,
        }
        if not self.lab_in_container:
            kwargs["ports"] = {f"{p}/tcp": (self.publish_host, None) for p in spec.ports}
        resources = spec.resources
        if resources.cpus:
            kwargs["nano_cpus"] = int(resources.cpus * 1e9)
        if resources.memory:
            # The same limit for memory + swap: over the limit the kernel kills the
            # process instead of swapping it to a crawl.
            kwargs["mem_limit"] = resources.memory
            kwargs["memswap_limit"] = resources.memory
        if resources.gpus:
            kwargs["device_requests"] = [
                DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])
            ]

        async with self._project_lock(spec.project):
            network = await self._ensure_network(spec.project)
            kwargs["network"] = network
            try:
                try:
                    container = await self._call(client.containers.create, image, **kwargs)
                except docker.errors.NotFound as exc:
                    if "network" not in explain(exc).lower():
                        raise
                    # Another lab on this engine removed the project's network just now.
                    await self._ensure_network(spec.project)
                    container = await self._call(client.containers.create, image, **kwargs)
            except docker.errors.ImageNotFound:
                raise SpecError(
                    f"Image {image} not found on the Docker engine (removed since it was "
                    "checked?): deploy again to pull it."
                ) from None
            except docker.errors.APIError as exc:
                raise start_error(exc, spec) from exc
            try:
                if mount:  # issue 12: host code is copied in, never bind-mounted
                    await self._call(
                        container.put_archive,
                        CODE_PARENT,
                        await asyncio.to_thread(code_archive, mount),
                    )
                await self._call(container.start)
                await self._call(container.reload)
            except docker.errors.APIError as exc:
                with contextlib.suppress(docker.errors.APIError):
                    await self._call(container.remove, force=True)
                raise start_error(exc, spec) from exc
        return self._handle(container.attrs)

    def _project_lock(self, project: str) -> asyncio.Lock:
        return self._project_locks.setdefault(project, asyncio.Lock())

    async def _ensure_network(self, project: str) -> str:
        """The project's network, made on first use (call under the project lock)."""
        client = await self._docker()
        name = self.network_name(project)
        # The `names` filter matches parts of names too: keep exact matches only.
        found = [n for n in await self._call(client.networks.list, names=[name]) if n.name == name]
        if not found:
            labels = {LABEL_INSTANCE: self.instance_id, LABEL_PROJECT: project}
            try:
                network = await self._call(
                    client.networks.create,
                    name,
                    driver="bridge",
                    labels=labels,
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: made by someone else just now
                    raise RuntimeError_(
                        f"Could not create the network {name}: {explain(exc)}"
                    ) from exc
            else:
                found = [network]
        if self.lab_in_container and self.lab_container:
            await self._join_network(name)
        return name

    async def _join_network(self, name: str) -> None:
        """Connect the lab's own container to a project network, to reach services."""
        client = await self._docker()
        network = await self._call(client.networks.get, name)
        try:
            await self._call(network.connect, self.lab_container)
        except docker.errors.APIError as exc:
            text = explain(exc).lower()
            if "already exists" not in text and "already attached" not in text:
                raise RuntimeError_(
                    f"Could not connect the lab's container {self.lab_container} to the "
                    f"network {name}: {explain(exc)}"
                ) from exc

    async def _ensure_volume(self, spec: ServiceSpec) -> str:
        client = await self._docker()
        name = self.volume_name(spec)
        try:
            await self._call(client.volumes.get, name)
        except docker.errors.NotFound:
            await self._call(client.volumes.create, name=name, labels=self._labels(spec))
        return name

    def _handle(self, attrs: dict[str, Any]) -> Handle:
        """The JSON handle of a container, from its inspect data (start and adopt)."""
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        ports: dict[str, int] = {}
        for key, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
            number, _, proto = key.partition("/")
            if proto == "tcp" and bindings:
                ports[number] = int(bindings[0]["HostPort"])
        mounts = attrs.get("Mounts") or []
        volume = next((m.get("Name") for m in mounts if m.get("Destination") == DATA_MOUNT), None)
        return {
            "runtime": self.name,
            "container_id": attrs["Id"],
            "container_name": attrs.get("Name", "").lstrip("/"),
            "key": labels.get(LABEL_KEY),
            "project": labels.get(LABEL_PROJECT),
            "service": labels.get(LABEL_SERVICE),
            "image": config.get("Image"),
            "network": (attrs.get("HostConfig") or {}).get("NetworkMode"),
            "volume": volume,
            "ports": ports,
            "exposed_ports": exposed_ports(config),
        }

    # --- inspect, status, address -------------------------------------------------------

    async def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's inspect data, or None when it is gone."""
        client = await self._docker()
        try:
            attrs = await self._call(client.api.inspect_container, container_id)
        except docker.errors.NotFound:
            attrs = None
        self._inspect_cache[container_id] = (time.monotonic(), attrs)
        return attrs

    async def status(self, handle: Handle) -> RuntimeStatus:
        attrs = await self._inspect(handle["container_id"])
        if attrs is None:
            await self._forget(handle["container_id"])
            if handle["container_id"] in self._stopped:
                return RuntimeStatus(phase=Phase.STOPPED, reason="stopped")
            return RuntimeStatus(phase=Phase.FAILED, reason="container vanished")
        state = attrs.get("State") or {}
        started_at = parse_time(state.get("StartedAt"))
        exit_code = state.get("ExitCode")
        error = (state.get("Error") or "").strip()
        extra = {
            "container_id": attrs["Id"],
            "container_name": attrs.get("Name", "").lstrip("/"),
            "state": state.get("Status"),
            "restart_count": attrs.get("RestartCount", 0),
        }
        status = state.get("Status")
        if status == "running" or state.get("Running"):
            if state.get("Paused"):
                return RuntimeStatus(
                    Phase.UNHEALTHY,
                    healthy=False,
                    reason="paused",
                    started_at=started_at,
                    extra=extra,
                )
            return await self._running_status(attrs, started_at, extra)
        if status in ("exited", "dead") or (status == "created" and error):
            await self._forget(attrs["Id"], keep_cache=True)
            oom = bool(state.get("OOMKilled"))
            if oom:
                limit = (attrs.get("HostConfig") or {}).get("Memory") or 0
                reason = "killed: out of memory" + (f" (limit {mib(limit)})" if limit else "")
            elif status == "created":
                reason = f"could not start: {error}"
            else:
                reason = f"exited with code {exit_code}"
                if error:
                    reason += f": {error}"
            return RuntimeStatus(
                Phase.FAILED,
                healthy=False,
                reason=reason,
                exit_code=exit_code,
                started_at=started_at,
                oom_killed=oom,
                extra=extra,
            )
        if status == "removing":
            return RuntimeStatus(Phase.STOPPED, extra=extra)
        # created (not started yet), restarting
        return RuntimeStatus(Phase.STARTING, reason=status, started_at=started_at, extra=extra)

    async def _running_status(
        self, attrs: dict[str, Any], started_at: datetime | None, extra: dict[str, Any]
    ) -> RuntimeStatus:
        config = health_config(attrs.get("Config"))
        if config is None:
            return RuntimeStatus(Phase.RUNNING, healthy=None, started_at=started_at, extra=extra)
        engine_health = (attrs.get("State") or {}).get("Health")
        runner = self._health.get(attrs["Id"])
        if runner is None and await self._run_health_ourselves(engine_health, config, started_at):
            runner = self._start_health_runner(attrs["Id"], config, started_at)
        # Docker runs the first check only after a whole interval (30 s by default); until
        # it has, run the image's check ourselves, as Docker 25's start interval does, so
        # that a service is healthy — and served — as soon as it is.
        awaiting_engine = runner is None and engine_health and not engine_health.get("Log")
        if awaiting_engine and await self._early_check(attrs["Id"], config):
            extra["health_checked_by"] = "servicelab"
            extra["health"] = HEALTHY
            return RuntimeStatus(Phase.RUNNING, healthy=True, started_at=started_at, extra=extra)
        if runner is not None:
            health, output = runner.status, runner.last_output
            extra["health_checked_by"] = "servicelab"
        else:
            engine_health = engine_health or {}
            health = engine_health.get("Status") or STARTING
            log = engine_health.get("Log") or []
            output = (log[-1].get("Output") or "").strip() if log else ""
            extra["health_checked_by"] = "engine"
        extra["health"] = health
        if health == HEALTHY:
            return RuntimeStatus(Phase.RUNNING, healthy=True, started_at=started_at, extra=extra)
        if health == UNHEALTHY:
            reason = "health check failed" + (f": {output}" if output else "")
            return RuntimeStatus(
                Phase.UNHEALTHY, healthy=False, reason=reason, started_at=started_at, extra=extra
            )
        return RuntimeStatus(Phase.STARTING, healthy=False, started_at=started_at, extra=extra)

    async def _run_health_ourselves(
        self,
        engine_health: dict[str, Any] | None,
        config: HealthConfig,
        started_at: datetime | None,
    ) -> bool:
        """Whether the engine leaves this container's HEALTHCHECK unrun."""
        if self.run_health_checks is not None:
            return self.run_health_checks
        if await self._engine_is_podman():
            return True
        if not engine_health:
            return True
        if engine_health.get("Log"):
            return False
        # Docker checks first after one interval; no result long after that means no one
        # is checking.
        running_for = _running_for(started_at)
        return running_for > config.start_period + 3 * config.interval + 5

    def _exec(self, container_id: str, argv: list[str]) -> tuple[int, str]:
        """Run `argv` in the container (blocking): its exit code and output."""
        assert self._client is not None
        result = self._client.api.exec_create(container_id, argv, stdout=True, stderr=True)
        output = self._client.api.exec_start(result["Id"])
        code = self._client.api.exec_inspect(result["Id"]).get("ExitCode")
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else ""
        return (code if isinstance(code, int) else -1), text

    async def _early_check(self, container_id: str, config: HealthConfig) -> bool:
        """The image's HEALTHCHECK run once now (at most every EARLY_CHECK_INTERVAL s)."""
        last = self._early.get(container_id)
        now = time.monotonic()
        if last is not None and (last[1] or now - last[0] < EARLY_CHECK_INTERVAL):
            return last[1]
        try:
            code, _ = await asyncio.wait_for(
                asyncio.to_thread(self._exec, container_id, config.argv), config.timeout
            )
        except Exception:  # not up yet, exec refused, timed out: simply not healthy yet
            code = -1
        self._early[container_id] = (now, code == 0)
        return code == 0

    def _start_health_runner(
        self, container_id: str, config: HealthConfig, started_at: datetime | None
    ) -> HealthRunner:
        runner = HealthRunner(config, functools.partial(self._exec, container_id))
        self._health[container_id] = runner
        runner.start(_running_for(started_at))
        return runner

    async def _forget(self, container_id: str, *, keep_cache: bool = False) -> None:
        self._early.pop(container_id, None)
        runner = self._health.pop(container_id, None)
        if runner is not None:
            await runner.close()
        if not keep_cache:
            self._inspect_cache.pop(container_id, None)

    async def address(self, handle: Handle, port: int) -> Address | None:
        container_id = handle["container_id"]
        cached = self._inspect_cache.get(container_id)
        if cached is not None and time.monotonic() - cached[0] < ADDRESS_CACHE_SECONDS:
            attrs = cached[1]
        else:
            attrs = await self._inspect(container_id)
        if attrs is None or not (attrs.get("State") or {}).get("Running"):
            return None
        if self.lab_in_container:
            known = set(exposed_ports(attrs.get("Config"))) | set(handle.get("exposed_ports") or [])
            known |= {int(p) for p in handle.get("ports") or {}}
            if port not in known:
                return None
            return Address(attrs.get("Name", "").lstrip("/"), port)
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp")
        if not bindings:
            return None
        host = self.publish_host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return Address(host, int(bindings[0]["HostPort"]))

    # --- logs -----------------------------------------------------------------------

    async def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        if tail == 0 and not follow:
            return
        options: dict[str, Any] = {
            "follow": follow,
            "tail": "all" if tail is None else max(0, int(tail)),
        }
        since_ts = timestamp(since) if since is not None else None
        if tail == 0 and follow:
            # "Only new lines" as a time, not as tail=0: a line written after this call
            # but before the engine opened the stream would otherwise be lost.
            options["tail"] = "all"
            since_ts = max(since_ts or 0.0, time.time())
        if since_ts is not None:
            # The SDK ignores a `since` of 0 or less; just after the epoch means all.
            options["since"] = max(since_ts, 1e-6)
        container_id = handle["container_id"]
        if not (tail and await self._engine_is_podman()):
            async for line in self._log_lines(container_id, options):
                yield line
            return
        # Podman 4's `tail` loses, joins and invents lines (k8s-file log driver), so
        # count lines here instead: the last `tail` of everything there is now, then,
        # when following, whatever comes after them.
        options["tail"] = "all"
        if not follow:
            last: deque[str] = deque(maxlen=tail)
            async for line in self._log_lines(container_id, options):
                last.append(line)
            for line in last:
                yield line
            return
        count = 0
        async for _ in self._log_lines(container_id, {**options, "follow": False}):
            count += 1
        skip = max(0, count - tail)
        async for line in self._log_lines(container_id, options):
            if skip:
                skip -= 1
                continue
            yield line

    async def _log_lines(self, container_id: str, options: dict[str, Any]) -> AsyncIterator[str]:
        client = await self._docker()

        def open_stream() -> Any:
            return client.api.logs(container_id, stdout=True, stderr=True, stream=True, **options)

        try:
            async for line in iterate_in_thread(open_stream, split_lines):
                yield line
        except docker.errors.NotFound:
            return  # a vanished container has no logs left
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc

    # --- stop, data, adopt ------------------------------------------------------------

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        client = await self._docker()
        container_id = handle["container_id"]
        await self._forget(container_id)
        self._stopped[container_id] = None
        while len(self._stopped) > MAX_REMEMBERED_STOPS:
            del self._stopped[next(iter(self._stopped))]
        try:
            container = await self._call(client.containers.get, container_id)
        except docker.errors.NotFound:
            container = None
        if container is not None:
            try:
                if container.status in ("running", "restarting", "paused"):
                    await self._call(container.stop, timeout=max(0, int(round(timeout))))
                await self._call(container.remove, v=False, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # 409: someone removes it already.
                if exc.status_code != 409:
                    raise RuntimeError_(
                        f"Could not stop container {handle.get('container_name')}: {explain(exc)}"
                    ) from exc
        project = handle.get("project")
        if project:
            await self._remove_network_if_unused(project)

    async def _remove_network_if_unused(self, project: str) -> None:
        """Remove a project's network when its last container is gone: a Docker engine
        has room for only a few dozen bridge networks."""
        client = await self._docker()
        name = self.network_name(project)
        async with self._project_lock(project):
            try:
                network = await self._call(client.networks.get, name)
                in_use = await self._call(
                    client.containers.list, all=True, filters={"network": name}
                )
                if in_use:
                    return
                await self._call(network.remove)
            except docker.errors.APIError:
                pass  # gone already, or joined meanwhile (the lab's own container...)

    async def delete_data(self, spec: ServiceSpec) -> None:
        client = await self._docker()
        name = self.volume_name(spec)
        try:
            volume = await self._call(client.volumes.get, name)
            await self._call(volume.remove)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise RuntimeError_(
                    f"The data of service {spec.name} (volume {name}) is still in use by a "
                    "container: stop the service first."
                ) from exc
            raise RuntimeError_(f"Could not delete volume {name}: {explain(exc)}") from exc

    async def kept_data(self) -> list[str]:
        client = await self._docker()
        label = f"{LABEL_INSTANCE}={self.instance_id}"
        volumes = await self._call(client.volumes.list, filters={"label": label})
        containers = await self._call(client.containers.list, all=True, filters={"label": label})
        with_container = {(c.labels or {}).get(LABEL_KEY) for c in containers}
        keys = {(v.attrs.get("Labels") or {}).get(LABEL_KEY) for v in volumes}
        return sorted(k for k in keys if k and k not in with_container)

    async def adopt(self) -> list[AdoptedInstance]:
        client = await self._docker()
        containers = await self._call(
            client.api.containers,
            filters={"label": f"{LABEL_INSTANCE}={self.instance_id}", "status": "running"},
        )
        adopted = []
        for summary in containers:
            attrs = await self._inspect(summary["Id"])
            if attrs is None:
                continue
            handle = self._handle(attrs)
            if handle["key"]:
                adopted.append(AdoptedInstance(key=handle["key"], handle=handle))
        return adopted

    async def close(self) -> None:
        for container_id in list(self._health):
            await self._forget(container_id)
        self._inspect_cache.clear()
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)


def _running_for(started_at: datetime | None) -> float:
    if started_at is None:
        return 0.0
    return max(0.0, time.time() - started_at.timestamp())
