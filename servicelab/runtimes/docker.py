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
- for code services from a local folder, a copy of that folder at `/workspace/code` in
  the runtime image (`docker_code`), owned by root;
- for code services, a hardened container (`docker_hardening`): an unprivileged user, a
  read-only root file system, no capabilities; for image services no capabilities but
  the few that let an image's root start-up hand over to its own user; no-new-privileges
  for every service;
- its spec's memory and CPU limits, else the lab's defaults, and the lab's process limit
  (`limits`: `pids_limit`, `mem_limit`, `nano_cpus`);
- its image's `HEALTHCHECK`, run by the engine, or by this runtime where the engine does
  not (Podman without systemd); the runtime image's asks the path the lab's probe would
  (`_HEALTH_PATH`).

Containers carry labels (`servicelab.instance`, `.project`, `.service`, `.key`), so that a
restarted lab finds its own running containers (`adopt`) and nobody else's. The engine
restarts nothing by itself: restarting failed instances with back-off is the manager's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import docker
import docker.errors
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
from servicelab.runtimes.docker_code import CODE_MOUNT, code_archive, code_mount, resolved_code
from servicelab.runtimes.docker_create import create_container, exited_at_once
from servicelab.runtimes.docker_egress import ensure_egress_rules, local_engine
from servicelab.runtimes.docker_engine import DockerEngine, contract_errors
from servicelab.runtimes.docker_hardening import code_service_options, image_service_options
from servicelab.runtimes.docker_health import code_service_healthcheck
from servicelab.runtimes.docker_images import ensure_image
from servicelab.runtimes.docker_logs import container_logs
from servicelab.runtimes.docker_networks import LABEL_INSTANCE, LABEL_PROJECT, ProjectNetworks
from servicelab.runtimes.docker_ports import with_ports
from servicelab.runtimes.docker_rules import (
    check_resources,
    docker_name,
    explain,
    exposed_ports,
    start_error,
)
from servicelab.runtimes.docker_status import ContainerStatus
from servicelab.runtimes.docker_usage import container_usage
from servicelab.runtimes.docker_volumes import LABEL_KEY, DataVolumes
from servicelab.runtimes.limits import Limits, effective_resources
from servicelab.runtimes.service_network import service_network
from servicelab.runtimes.usage import Usage
from servicelab.spec import PULL_POLICIES, Resources, ServiceSpec

if TYPE_CHECKING:
    from servicelab.config import Settings

LABEL_SERVICE = "servicelab.service"

#: Where the service's volume is mounted, as ML Lab's best practices say.
DATA_MOUNT = "/data"
#: The path the runtime image's HEALTHCHECK asks (images/runtime/resources/scripts).
HEALTH_PATH_ENV = "_HEALTH_PATH"

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
        limits: Limits | None = None,
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
        limits: the lab's default limits (by default `Limits()`'s).
        """
        self.limits = limits or Limits()
        self.instance_id = instance_id
        self.lab_in_container = lab_in_container
        self.publish_host = publish_host
        self.runtime_image = runtime_image
        self.name_prefix = name_prefix or docker_name(instance_id)
        lab_container = lab_container or (socket.gethostname() if lab_in_container else None)
        self.lab_container = lab_container
        self.engine = DockerEngine(client, api_timeout)
        self.networks = ProjectNetworks(
            self.engine,
            instance_id,
            self.name_prefix,
            lab_container if lab_in_container else None,
        )
        self.volumes = DataVolumes(self.engine, instance_id, self.name_prefix)
        self.containers = ContainerStatus(
            self.engine,
            lab_in_container=lab_in_container,
            publish_host=publish_host,
            run_health_checks=run_health_checks,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerRuntime:
        """SERVICELAB_RUNTIME=docker: refused when no engine answers (rather than failing
        every start later); the egress rules of the services' networks installed first."""
        if not asyncio.run(cls.available(timeout=2.0)):
            raise RuntimeUnavailable(
                "SERVICELAB_RUNTIME=docker, but no Docker engine answers at DOCKER_HOST: "
                "start one, or use SERVICELAB_RUNTIME=local."
            )
        egress = service_network(settings).egress
        ensure_egress_rules(egress, settings.endpoint, local_engine())
        return cls(
            settings.instance_id,
            lab_in_container=settings.lab_in_container,
            runtime_image=settings.runtime_image,
            limits=Limits.from_settings(settings),
        )

    @classmethod
    async def available(cls, timeout: float = 3.0) -> bool:
        """Whether a Docker-compatible engine answers at `DOCKER_HOST` within `timeout`."""
        return await DockerEngine.available(timeout)

    # --- names ----------------------------------------------------------------------

    def network_name(self, project: str) -> str:
        return self.networks.name(project)

    def volume_name(self, spec: ServiceSpec) -> str:
        return self.volumes.name(spec)

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

    @contract_errors
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
        engine_cpus = await self.engine.cpus() if spec.resources.cpus else 0
        if engine_cpus and (spec.resources.cpus or 0) > engine_cpus:
            raise SpecError(
                f"Service {spec.name} asks for {spec.resources.cpus:g} CPUs, but the Docker "
                f"engine has {engine_cpus}: ask for {engine_cpus} or fewer."
            )
        if spec.code:
            # A local path must exist now, so that a typo is a 4xx and not a crash loop;
            # resolved here once, the service only ever gets this path (issue 12).
            spec = replace(spec, code=await asyncio.to_thread(resolved_code, spec.code))
        image = spec.image or self.runtime_image
        attrs = await ensure_image(self.engine, image, spec.pull_policy, progress)
        return with_ports(spec, image, attrs.get("Config"))

    # --- start ----------------------------------------------------------------------

    @contract_errors
    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        if not spec.ports or spec.connection_port is None:
            spec = await self.prepare(spec, progress)
        client = await self.engine.client()
        image = spec.image or self.runtime_image
        environment = dict(env)
        environment[DATA_DIR_ENV] = DATA_MOUNT
        mount = await asyncio.to_thread(code_mount, spec.code) if spec.code else None
        if spec.code:
            environment["EXECUTE_CODE"] = mount.execute_code if mount else spec.code
            environment.setdefault("PORT", str(spec.connection_port))
        health_port = spec.health_port
        if health_port is not None:
            # The runtime image's HEALTHCHECK asks what the lab's probe would ("": TCP).
            environment.setdefault(HEALTH_PATH_ENV, spec.probe_path(health_port) or "")
        volume = await self.volumes.ensure(spec, self._labels(spec))
        volumes = {volume: {"bind": DATA_MOUNT, "mode": "rw"}}
        kwargs: dict[str, Any] = {
            "name": self._container_name(spec),
            "environment": environment,
            "labels": self._labels(spec),
            "volumes": volumes,
            "detach": True,
            **(code_service_options() if spec.code else image_service_options()),
        }
        if not self.lab_in_container:
            kwargs["ports"] = {f"{p}/tcp": (self.publish_host, None) for p in spec.ports}
        kwargs.update(await self._resource_options(spec))
        if spec.code:
            # The lab's start period and retries for the runtime image's own check.
            image_attrs = await self.engine.call(client.api.inspect_image, image)
            health = spec.health
            check = code_service_healthcheck(
                image_attrs.get("Config"), health.start_period, health.timeout, health.retries
            )
            if check is not None:
                kwargs["healthcheck"] = check

        async with self.networks.lock(spec.project):
            kwargs["network"] = await self.networks.ensure(spec.project)
            container = await create_container(self.engine, self.networks, spec, image, kwargs)
            try:
                if mount:  # issue 12: host code is copied in, never bind-mounted
                    await self.engine.call(
                        container.put_archive,
                        CODE_MOUNT,
                        await asyncio.to_thread(code_archive, mount),
                    )
                await self.engine.call(container.start)
                await self.engine.call(container.reload)
            except docker.errors.APIError as exc:
                if await exited_at_once(self.engine, container, exc):
                    return container_handle(container.attrs)
                with contextlib.suppress(docker.errors.APIError):
                    await self.engine.call(container.remove, v=True, force=True)
                raise start_error(exc, spec) from exc
        return container_handle(container.attrs)

    async def _resource_options(self, spec: ServiceSpec) -> dict[str, Any]:
        """The spec's limits, else the lab's defaults (`limits.py`), and the lab's process
        limit. A CPU default is capped at the engine's CPUs, which the engine enforces."""
        capped = not spec.resources.cpus and self.limits.cpus
        engine_cpus = await self.engine.cpus() if capped else 0
        resources = effective_resources(spec.resources, self.limits, engine_cpus=engine_cpus)
        return resource_options(resources, pids=self.limits.pids)

    # --- status, address, logs ------------------------------------------------------

    @contract_errors
    async def status(self, handle: Handle) -> RuntimeStatus:
        return await self.containers.status(handle)

    @contract_errors
    async def address(self, handle: Handle, port: int) -> Address | None:
        return await self.containers.address(handle, port)

    @contract_errors
    async def usage(self, handle: Handle) -> Usage | None:
        return await container_usage(self.engine, handle["container_id"])

    def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        return container_logs(
            self.engine, handle["container_id"], tail=tail, since=since, follow=follow
        )

    # --- stop, data, adopt ------------------------------------------------------------

    @contract_errors
    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        client = await self.engine.client()
        container_id = handle["container_id"]
        await self.containers.stopping(container_id)
        try:
            container = await self.engine.call(client.containers.get, container_id)
        except docker.errors.NotFound:
            container = None
        if container is not None:
            try:
                if container.status in ("running", "restarting", "paused"):
                    await self.engine.call(container.stop, timeout=max(0, int(round(timeout))))
                # v: its anonymous volumes (code, HOME) go with it; /data, a named
                # volume, stays until delete_data.
                await self.engine.call(container.remove, v=True, force=True)
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
            await self.networks.remove_if_unused(project)

    @contract_errors
    async def delete_data(self, spec: ServiceSpec) -> None:
        await self.volumes.delete(spec)

    @contract_errors
    async def kept_data(self) -> list[str]:
        return await self.volumes.kept()

    @contract_errors
    async def adopt(self) -> list[AdoptedInstance]:
        client = await self.engine.client()
        # Every container, not only running ones: a lab killed between creating and
        # starting one leaves it `created`; the manager keeps one per service and has
        # the others removed.
        containers = await self.engine.call(
            client.api.containers,
            all=True,
            filters={"label": f"{LABEL_INSTANCE}={self.instance_id}"},
        )
        adopted = []
        for summary in containers:
            attrs = await self.containers.inspect(summary["Id"])
            if attrs is None:
                continue
            handle = container_handle(attrs)
            if handle["key"]:
                adopted.append(AdoptedInstance(key=handle["key"], handle=handle))
        return adopted

    async def close(self) -> None:
        await self.containers.close()
        await self.engine.close()


def container_handle(attrs: dict[str, Any]) -> Handle:
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
        "runtime": DockerRuntime.name,
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


def resource_options(resources: Resources, *, pids: int | None = None) -> dict[str, Any]:
    """`containers.create` options for CPU, memory, GPU and process limits."""
    options: dict[str, Any] = {}
    if pids:
        options["pids_limit"] = pids
    if resources.cpus:
        options["nano_cpus"] = int(resources.cpus * 1e9)
    if resources.memory:
        # The same limit for memory + swap: over the limit the kernel kills the process
        # instead of swapping it to a crawl.
        options["mem_limit"] = resources.memory
        options["memswap_limit"] = resources.memory
    if resources.gpus:
        options["device_requests"] = [DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])]
    return options
