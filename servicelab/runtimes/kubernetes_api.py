"""The few Kubernetes API calls the runtime makes, on lightkube's async client, in dicts.

Everything the runtime reads and writes is a plain dict (what `kubernetes_manifests`
builds, what `kubernetes_status` reads); this module alone knows lightkube's typed models.
Errors come out as the runtime's own: an API server that does not answer is
`RuntimeUnavailable`, a refusal is `RuntimeError_` with the server's message (a 422 for a
manifest it refuses is a bug of ours, a 403 a Role without the verb: both said plainly).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2  # lightkube's HTTP client (a maintained fork of httpx)
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import (
    Namespace,
    PersistentVolumeClaim,
    Pod,
    Secret,
    Service,
)
from lightkube.resources.networking_v1 import NetworkPolicy

from servicelab.runtimes.base import RuntimeError_, RuntimeUnavailable

Document = dict[str, Any]

KINDS: dict[str, Any] = {
    "Deployment": Deployment,
    "Namespace": Namespace,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Pod": Pod,
    "Secret": Secret,
    "Service": Service,
    "NetworkPolicy": NetworkPolicy,
}

#: Where a pod finds its own namespace in a cluster.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def load_config(kubeconfig: str = "", server: str = "") -> KubeConfig:
    """A server URL (tests: the emulator), a kubeconfig file, else in-cluster/$KUBECONFIG."""
    if server:
        return KubeConfig.from_dict(
            {
                "clusters": [{"name": "lab", "cluster": {"server": server}}],
                "users": [{"name": "lab", "user": {}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
                "current-context": "lab",
            }
        )
    if kubeconfig:
        return KubeConfig.from_file(kubeconfig)
    return KubeConfig.from_env()


def own_namespace() -> str | None:
    """The namespace the lab's pod runs in, or None outside a cluster."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def code(exc: httpx2.HTTPStatusError) -> int:
    """The HTTP status of a refusal (lightkube's ApiError or a bare error answer)."""
    return exc.response.status_code


def _matches(document: Document, labels: dict[str, str]) -> bool:
    have = (document.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class KubeApi:
    """Create, read, list, delete and log: all the verbs deploy/kubernetes's Role grants."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self._config = config
        self._timeout = timeout
        self._client: AsyncClient | None = None

    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(self._config, timeout=httpx2.Timeout(self._timeout))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except httpx2.HTTPStatusError as exc:  # ApiError, or an answer without a Status
            message = exc.status.message if isinstance(exc, ApiError) else None
            raise RuntimeError_(
                f"Kubernetes refused to {what}: {message or f'HTTP {code(exc)}'}"
            ) from exc
        except httpx2.TransportError as exc:
            raise RuntimeUnavailable(
                f"The Kubernetes API server does not answer ({type(exc).__name__}): "
                "check the lab's kubeconfig or in-cluster service account."
            ) from exc

    async def create(self, manifest: Document) -> tuple[Document, bool]:
        """Create the object; (it, True), or (the existing one, False) if it is there already
        (adoption: a restarted lab never creates anything twice)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        async with self._errors(f"create {kind} {meta['name']}"):
            try:
                created = await self.client().create(from_dict(manifest))
                return created.to_dict(), True
            except httpx2.HTTPStatusError as exc:
                if code(exc) != 409:
                    raise
        existing = await self.get(kind, meta["name"], meta.get("namespace"))
        if existing is None:
            raise RuntimeError_(f"{kind} {meta['name']} exists and vanished at once: try again.")
        return existing, False

    async def get(self, kind: str, name: str, namespace: str | None) -> Document | None:
        async with self._errors(f"read {kind} {name}"):
            try:
                if namespace is None:
                    found = await self.client().get(KINDS[kind], name)
                else:
                    found = await self.client().get(KINDS[kind], name, namespace=namespace)
            except httpx2.HTTPStatusError as exc:
                if code(exc) == 404:
                    return None
                raise
        document: Document = found.to_dict()
        return document

    async def list(
        self, kind: str, namespace: str | None, labels: dict[str, str]
    ) -> list[Document]:
        """Objects with all these labels (checked here too: a selector is only a filter)."""
        documents = []
        async with self._errors(f"list {kind}"):
            kwargs: dict[str, Any] = {"labels": labels}
            if namespace is not None:
                kwargs["namespace"] = namespace
            async for item in self.client().list(KINDS[kind], **kwargs):
                document = item.to_dict()
                if _matches(document, labels):
                    documents.append(document)
        return documents

    async def delete(self, kind: str, name: str, namespace: str | None) -> bool:
        """Delete; False if it was gone already (deleting twice is no error)."""
        async with self._errors(f"delete {kind} {name}"):
            try:
                await self.client().delete(KINDS[kind], name, namespace=namespace)
            except httpx2.HTTPStatusError as exc:
                if code(exc) == 404:
                    return False
                raise
        return True

    async def log_lines(
        self,
        pod: str,
        namespace: str,
        *,
        tail: int | None,
        since_seconds: int | None,
        follow: bool,
    ) -> AsyncIterator[str]:
        """A pod's log lines with their RFC 3339 timestamps (`<time> <text>`)."""
        async with self._errors(f"read the log of pod {pod}"):
            try:
                async for line in self.client().log(
                    pod,
                    namespace=namespace,
                    follow=follow,
                    since=since_seconds,
                    tail_lines=tail,
                    timestamps=True,
                    newlines=False,
                ):
                    yield line
            except httpx2.HTTPStatusError as exc:
                # 400: the container has not started yet; 404: the pod is gone.
                if code(exc) not in (400, 404):
                    raise
