"""A Kubernetes cluster for the runtime's tests: kmock's API emulator, plus a kubelet.

kmock's `KubernetesEmulator` stores objects and serves creates, reads, lists and deletes
over HTTP; it runs no controllers. `Cluster` adds pods and their logs by hand (with the
real status documents of tests/kubernetes/pods, captured from clusters by other
projects: their README says where each comes from); `Kubelet` runs each
Deployment's pod as a local process of the echo service (tests/services/echo-service),
with the environment from the pod's Secret and `/data` in a folder per claim, and keeps
the pod's status, logs and lifetime in the emulator. The image is not run: the kubelet
stands in for the container runtime, so that the shared contract suite can drive the
runtime's API traffic end to end. What it cannot prove is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import yaml

from servicelab.runtimes.base import Address, Handle
from servicelab.runtimes.kubernetes import KubernetesRuntime
from servicelab.runtimes.kubernetes_manifests import CONTAINER

CAPTURED = Path(__file__).parent / "kubernetes" / "pods"


class _Captured(yaml.SafeLoader):
    """YAML without timestamps: `2018-12-02T09:19:36Z` stays the string the API sent."""


_Captured.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def captured_status(path: Path) -> dict[str, Any]:
    """A real pod's status, its service container's entry renamed as the runtime's."""
    document = yaml.load(path.read_text(), Loader=_Captured)  # noqa: S506 (a safe loader)
    status: dict[str, Any] = document["status"]
    for entry in status.get("containerStatuses") or []:
        if entry["name"] == document.get("container"):
            entry["name"] = CONTAINER
    return status


POD_STATES = {path.stem: captured_status(path) for path in sorted(CAPTURED.glob("*.yaml"))}
ECHO_SERVICE = Path(__file__).parent / "services" / "echo-service"
RESOURCES = (
    "v1/pods",
    "v1/secrets",
    "v1/services",
    "v1/persistentvolumeclaims",
    "v1/namespaces",
    "apps/v1/deployments",
    "networking.k8s.io/v1/networkpolicies",
)


def now_text() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Cluster:
    """kmock's emulator plus what a kubelet would do: pods for Deployments, their logs."""

    def __init__(self, emulator: Any, url: str) -> None:
        self.emulator = emulator
        self.url = url  # the emulator's API, for tests that drive it from another thread
        self.lines: dict[str, list[tuple[datetime, str]]] = {}
        for resource in RESOURCES:
            self.emulator.resources[resource]
        emulator[kmock.resource("v1/pods"), kmock.subresource("log")] << self._log

    def exists(self, plural: str, name: str) -> bool:
        return any(
            resource.plural == plural and key_name == name and not obj.deleted
            for (resource, _, key_name), obj in self.emulator.objects.items()
        )

    def names(self, plural: str) -> set[str]:
        return {
            name
            for (resource, _, name), obj in self.emulator.objects.items()
            if resource.plural == plural and not obj.deleted
        }

    def pod_of(self, deployment: dict[str, Any], state: str) -> dict[str, Any]:
        """The pod the Deployment's ReplicaSet would create, with a real status document."""
        template = deployment["spec"]["template"]
        name = f"{deployment['metadata']['name']}-7d9c8b6f5-{len(self.lines):05d}"
        namespace = deployment["metadata"]["namespace"]
        self.lines[name] = []
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": namespace},
            "spec": template["spec"],
            "status": copy.deepcopy(POD_STATES[state]),
        }

    async def add_pod(self, runtime: KubernetesRuntime, handle: Handle, state: str) -> str:
        deployment = await runtime.api.get("Deployment", handle["instance"], handle["namespace"])
        assert deployment is not None
        pod = self.pod_of(deployment, state)
        await runtime.api.create(pod)
        return str(pod["metadata"]["name"])

    def log(self, pod: str, text: str, when: datetime | None = None) -> None:
        self.lines[pod].append((when or datetime.now(UTC), text))

    def _log(self, request: Any) -> Any:
        lines = self.lines.get(request.name or "", [])
        params = request.params
        if "sinceSeconds" in params:
            cut = datetime.now(UTC) - timedelta(seconds=int(params["sinceSeconds"]))
            lines = [line for line in lines if line[0] >= cut]
        if "tailLines" in params:
            lines = lines[-int(params["tailLines"]) :] if int(params["tailLines"]) else []

        def render(when: datetime, text: str) -> bytes:
            return f"{when.isoformat().replace('+00:00', 'Z')} {text}\n".encode()

        if params.get("follow") != "true":
            return b"".join(render(*line) for line in lines)
        deployment = (request.name or "").rsplit("-", 2)[0]
        start = len(self.lines.get(request.name or "", []))

        async def stream() -> AsyncIterator[bytes]:
            yield b""  # the answer starts at once, as the kubelet's does
            for line in lines:
                yield render(*line)
            seen = start
            # The kubelet ends the stream when the pod's container stops.
            while self.exists("deployments", deployment):
                for line in self.lines[request.name][seen:]:
                    yield render(*line)
                seen = len(self.lines[request.name])
                await asyncio.sleep(0.02)

        return stream()

    def find(self, plural: str, name: str) -> Any:
        for (resource, _, key_name), obj in self.emulator.objects.items():
            if resource.plural == plural and key_name == name and not obj.deleted:
                return obj
        return None


class Kubelet:
    """Runs every Deployment of the emulator as a local process of the echo service."""

    def __init__(self, cluster: Cluster, runtime: KubernetesRuntime, data: Path) -> None:
        self.cluster = cluster
        self.runtime = runtime
        self.data = data
        self.ports: dict[str, int] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None

    def address(self, handle: Handle, port: int) -> Address:
        return Address("127.0.0.1", self.ports[handle["instance"]])

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        for task in self._tasks:
            task.cancel()

    async def _loop(self) -> None:
        while True:
            for name in self.cluster.names("deployments") - set(self.processes):
                await self._start(name)
            for name, process in list(self.processes.items()):
                if name not in self.cluster.names("deployments") and process.returncode is None:
                    process.terminate()  # the Deployment went: its pod goes
            await asyncio.sleep(0.02)

    async def _start(self, name: str) -> None:
        deployment = self.cluster.find("deployments", name).raw
        template = deployment["spec"]["template"]
        namespace = deployment["metadata"]["namespace"]
        pod_spec = template["spec"]
        secret_name = pod_spec["containers"][0]["envFrom"][0]["secretRef"]["name"]
        secret = self.cluster.find("secrets", secret_name).raw
        env = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        claim = pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
        folder = self.data / claim
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.ports[name] = port
        env |= {"PORT": str(port), "LAB_DATA_DIR": str(folder), "SERVICE_HOST": "127.0.0.1"}
        env["PATH"] = os.environ.get("PATH", "")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            str(ECHO_SERVICE),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.processes[name] = process
        pod = f"{name}-7d9c8b6f5-x2x9q"
        started = now_text()
        # The captured document of a ready pod, with this pod's image and times.
        ready = copy.deepcopy(POD_STATES["running_ready"])
        ready["startTime"] = started
        (container,) = ready["containerStatuses"]
        container["image"] = pod_spec["containers"][0]["image"]
        container["state"]["running"]["startedAt"] = started
        await self.runtime.api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**template["metadata"], "name": pod, "namespace": namespace},
                "spec": pod_spec,
                "status": ready,
            }
        )
        self.cluster.lines[pod] = []
        self._tasks.append(asyncio.create_task(self._watch(process, pod)))

    async def _watch(self, process: asyncio.subprocess.Process, pod: str) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.cluster.log(pod, raw.decode().rstrip("\n"))
        code = await process.wait()
        obj = self.cluster.find("pods", pod)
        if obj is None:
            return
        if code in (0, -15):  # stopped by its Deployment's deletion: the pod goes
            obj.delete()
            return
        terminated = {"exitCode": code, "reason": "Error", "finishedAt": now_text()}
        status = obj.raw["status"]
        status["containerStatuses"][0] |= {"ready": False, "state": {"terminated": terminated}}
        obj.patch({"status": status})


@contextlib.asynccontextmanager
async def emulated() -> AsyncIterator[tuple[Cluster, str]]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        yield Cluster(emulator, str(server.url)), str(server.url)


__all__ = ["POD_STATES", "RESOURCES", "Cluster", "Kubelet", "emulated", "timedelta"]
