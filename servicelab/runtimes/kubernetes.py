"""The Kubernetes runtime: each service instance is a Deployment in a cluster.

In the style of JupyterHub's KubeSpawner, split like the Docker runtime:
`kubernetes_manifests` (the objects, pure), `kubernetes_api` (the calls),
`kubernetes_status` (pod states in users' words), `kubernetes_logs` (the pod log API).

The client is lightkube's `AsyncClient`: it is maintained, typed from the official
OpenAPI models (`lightkube-models` follows each Kubernetes release), and built on httpx,
which the lab already uses for its proxy and prober, so that the runtime adds one small
library and no second HTTP stack (kubernetes_asyncio would bring aiohttp's client,
swagger-generated models and ~100k lines for the seven kinds used here).

An *instance* is one revision of a service: a Deployment (`spec.replicas` pods), its
Secret (the whole environment, so LAB_API_TOKEN is never a plain env value in a
manifest), a ClusterIP Service per port and a NetworkPolicy; see `kubernetes_manifests`.
The manager's update starts a new revision beside the old one and stops the old one only
once the new one is ready: the old pods keep serving until then, as on Docker. Within a
revision the Deployment's own rolling updates (a node drained, `kubectl rollout
restart`) keep `maxUnavailable: 0`.

Selected with `SERVICELAB_RUNTIME=kubernetes`; in-cluster config, or a kubeconfig
(`SERVICELAB_KUBERNETES_KUBECONFIG`, else $KUBECONFIG). It has not been run against a
real cluster yet: docs/kubernetes.md says what the tests prove and what they cannot.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar

from servicelab.code_source import is_remote
from servicelab.runtimes.base import (
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeStatus,
    SpecError,
)
from servicelab.runtimes.egress import Egress
from servicelab.runtimes.kubernetes_api import KubeApi, load_config, own_namespace
from servicelab.runtimes.kubernetes_logs import instance_logs
from servicelab.runtimes.kubernetes_manifests import (
    ANNOTATION_CONNECTION_PORT,
    ANNOTATION_KEY,
    ANNOTATION_PORTS,
    ENV_NAME,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_REVISION,
    LABEL_SERVICE,
    ClusterOptions,
    claim_name,
    instance_labels,
    instance_manifests,
    label_value,
    namespace,
    port_service_name,
    secret_name,
)
from servicelab.runtimes.kubernetes_status import instance_status
from servicelab.runtimes.limits import Limits
from servicelab.spec import Phase, ServiceSpec

#: `address()` runs for each proxied request: what it saw stays good this long.
STATUS_CACHE_SECONDS = 1.0
MAX_REMEMBERED_STOPS = 10_000


def cluster_address(handle: Handle, port: int) -> Address:
    """The ClusterIP Service of the instance's `port`, by its name in the cluster's DNS."""
    service = port_service_name(handle["instance"], port)
    return Address(f"{service}.{handle['namespace']}.svc", port)


class KubernetesRuntime(Runtime):
    """Services as Deployments in a Kubernetes cluster."""

    name: ClassVar[str] = "kubernetes"
    supports_images: ClassVar[bool] = True
    supports_replicas: ClassVar[bool] = True

    def __init__(self, options: ClusterOptions, api: KubeApi) -> None:
        self.options = options
        self.api = api
        #: Where the proxy reaches a port's Service: its cluster DNS name. Replaceable only
        #: where no cluster DNS exists (the tests' emulator runs pods as local processes).
        self.service_address: Callable[[Handle, int], Address] = cluster_address
        self._stopped: dict[str, None] = {}
        self._cache: dict[str, tuple[float, RuntimeStatus]] = {}

    @classmethod
    def from_settings(cls, settings: Any, *, server: str = "") -> KubernetesRuntime:
        """The runtime a lab's settings describe; `server`: an API URL (the tests' emulator)."""
        config = load_config(settings.kubernetes_kubeconfig, server)
        lab_namespace = (
            settings.kubernetes_lab_namespace or own_namespace() or settings.kubernetes_namespace
        )
        options = ClusterOptions(
            instance_id=settings.instance_id or "servicelab",
            namespace=settings.kubernetes_namespace,
            namespace_per_project=settings.kubernetes_namespace_per_project,
            lab_namespace=lab_namespace,
            runtime_image=settings.runtime_image,
            node_selector=dict(settings.kubernetes_node_selector),
            tolerations=list(settings.kubernetes_tolerations),
            storage_class=settings.kubernetes_storage_class,
            data_size=settings.kubernetes_data_size,
            limits=Limits.from_settings(settings),
            egress=Egress.parse(settings.service_egress),
        )
        return cls(options, KubeApi(config))

    # --- prepare, start -----------------------------------------------------------------

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        if bool(spec.image) == bool(spec.code):
            raise SpecError("A service needs either an image or code to run, and not both.")
        if spec.code and not is_remote(spec.code):
            raise SpecError(
                f"Cannot run code from {spec.code!r} on Kubernetes: the cluster has no access "
                "to the lab's files. Give a pip-style VCS URL (git+https://...) or the key "
                "of a file in the project's data (models/..., datasets/...)."
            )
        bad = sorted(k for k in spec.env if not ENV_NAME.match(k))
        if bad:
            raise SpecError(
                f"Environment variable names {', '.join(map(repr, bad))} cannot be passed "
                "by Kubernetes: use letters, digits, '_', '-' and '.', not starting with a digit."
            )
        ports = list(spec.ports)
        connection = spec.connection_port or (ports[0] if ports else None)
        if connection is None:
            raise SpecError(
                f"Give the HTTP port of image {spec.image}: on Kubernetes the lab cannot read "
                "an image's EXPOSE lines (deploy with a port, e.g. ports=[8080])."
            )
        if connection not in ports:
            ports.append(connection)
        return replace(spec, ports=ports, connection_port=connection)

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        if not spec.ports or spec.connection_port is None:
            spec = await self.prepare(spec, progress)
        environment = dict(env)
        if spec.code:
            environment["EXECUTE_CODE"] = spec.code
            environment.setdefault("PORT", str(spec.connection_port))
        revision = secrets.token_hex(3)
        if self.options.namespace_per_project:
            await self.api.create(namespace(self.options, spec.project))
        created: list[dict[str, Any]] = []
        try:
            for manifest in instance_manifests(self.options, spec, revision, environment):
                document, new = await self.api.create(manifest)
                if new and manifest["kind"] != "PersistentVolumeClaim":
                    created.append(manifest)
        except BaseException:
            for manifest in reversed(created):
                meta = manifest["metadata"]
                await self.api.delete(manifest["kind"], meta["name"], meta["namespace"])
            raise
        if progress:
            progress(f"created Deployment {created[-1]['metadata']['name']}")
        return self._handle(created[-1])

    def _handle(self, deployment: dict[str, Any]) -> Handle:
        meta = deployment["metadata"]
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        ports = [int(p) for p in (annotations.get(ANNOTATION_PORTS) or "").split(",") if p]
        connection = annotations.get(ANNOTATION_CONNECTION_PORT) or ""
        return {
            "runtime": self.name,
            "instance": meta["name"],
            "namespace": meta["namespace"],
            "key": annotations.get(ANNOTATION_KEY),
            "project": labels.get(LABEL_PROJECT),
            "service": labels.get(LABEL_SERVICE),
            "revision": labels.get(LABEL_REVISION),
            "ports": ports,
            "connection_port": int(connection) if connection.isdigit() else None,
        }

    def _selector(self, handle: Handle) -> dict[str, str]:
        return {
            LABEL_MANAGED: "servicelab",
            LABEL_INSTANCE: label_value(self.options.instance_id),
            LABEL_REVISION: handle["revision"],
        }

    # --- status, address, logs ------------------------------------------------------------

    async def status(self, handle: Handle) -> RuntimeStatus:
        name, ns = handle["instance"], handle["namespace"]
        deployment = await self.api.get("Deployment", name, ns)
        if deployment is None:
            status = (
                RuntimeStatus(Phase.STOPPED, reason="stopped")
                if name in self._stopped
                else RuntimeStatus(Phase.FAILED, reason=f"Deployment {name} vanished")
            )
        else:
            pods = await self.api.list("Pod", ns, self._selector(handle))
            status = instance_status(deployment, pods)
        self._cache[name] = (time.monotonic(), status)
        return status

    async def address(self, handle: Handle, port: int) -> Address | None:
        if port not in (handle.get("ports") or []):
            return None
        cached = self._cache.get(handle["instance"])
        if cached is not None and time.monotonic() - cached[0] < STATUS_CACHE_SECONDS:
            status = cached[1]
        else:
            status = await self.status(handle)
        if status.phase not in (Phase.RUNNING, Phase.UNHEALTHY):
            return None
        return self.service_address(handle, port)

    async def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        pods = await self.api.list("Pod", handle["namespace"], self._selector(handle))
        names = [p["metadata"]["name"] for p in pods]
        async for line in instance_logs(
            self.api, handle["namespace"], names, tail=tail, since=since, follow=follow
        ):
            yield line

    # --- stop, adopt, data ----------------------------------------------------------------

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        """Delete the instance's Deployment (its pods go with it), Services, policy and
        Secret. The claim stays: the data outlives the instance."""
        name, ns = handle["instance"], handle["namespace"]
        self._stopped[name] = None
        while len(self._stopped) > MAX_REMEMBERED_STOPS:
            del self._stopped[next(iter(self._stopped))]
        self._cache.pop(name, None)
        await self.api.delete("Deployment", name, ns)
        for port in handle.get("ports") or []:
            await self.api.delete("Service", port_service_name(name, port), ns)
        await self.api.delete("NetworkPolicy", name, ns)
        await self.api.delete("Secret", secret_name(name), ns)

    def _scope(self) -> str | None:
        """Where to look for this lab's objects: its namespace, or all (per project)."""
        return None if self.options.namespace_per_project else self.options.namespace

    def _lab_labels(self) -> dict[str, str]:
        return {LABEL_MANAGED: "servicelab", LABEL_INSTANCE: label_value(self.options.instance_id)}

    async def adopt(self) -> list[AdoptedInstance]:
        """Every Deployment of this lab; pieces of an instance whose Deployment was never
        created (a lab killed during `start`) are removed."""
        deployments = await self.api.list("Deployment", self._scope(), self._lab_labels())
        adopted = []
        revisions = set()
        for deployment in deployments:
            handle = self._handle(deployment)
            revisions.add(handle["revision"])
            if handle["key"]:
                adopted.append(AdoptedInstance(key=handle["key"], handle=handle))
        for kind in ("Secret", "Service", "NetworkPolicy"):
            for leftover in await self.api.list(kind, self._scope(), self._lab_labels()):
                meta = leftover["metadata"]
                if (meta.get("labels") or {}).get(LABEL_REVISION) not in revisions:
                    await self.api.delete(kind, meta["name"], meta["namespace"])
        return adopted

    async def delete_data(self, spec: ServiceSpec) -> None:
        await self.api.delete(
            "PersistentVolumeClaim", claim_name(spec), self.options.namespace_of(spec.project)
        )

    async def kept_data(self) -> list[str]:
        claims = await self.api.list("PersistentVolumeClaim", self._scope(), self._lab_labels())
        running = {
            (d["metadata"].get("annotations") or {}).get(ANNOTATION_KEY)
            for d in await self.api.list("Deployment", self._scope(), self._lab_labels())
        }
        keys = {(c["metadata"].get("annotations") or {}).get(ANNOTATION_KEY) for c in claims}
        return sorted(k for k in keys if k and k not in running)

    async def close(self) -> None:
        await self.api.close()


__all__ = ["ClusterOptions", "KubernetesRuntime", "instance_labels"]
