"""What an instance's pods say, in the words of `RuntimeStatus` (no I/O here).

The inputs are the documents the API server returns (a Deployment and its pods, as
dicts); the rules follow what `kubectl describe` shows users:

- a container waiting in `ImagePullBackOff`/`ErrImagePull`/`InvalidImageName`: failed,
  the image cannot be pulled (the kubelet's message says why);
- `CrashLoopBackOff`: failed, with the exit code of the last run (`lastState`);
- a last run `OOMKilled`: failed, killed for memory, with the limit (the exit code is
  137 on most nodes, 1 on some: the reason is what tells);
- a container the runtime could not start (`StartError`, `ContainerCannotRun`): failed,
  with the runtime's message, not as an exit of the service;
- `Pending` and not scheduled: starting, with the scheduler's message (no node with a
  free GPU...), since a node may still come (a cluster autoscaler);
- running but not ready: starting until the startup probe passed, then unhealthy.

The documents these rules were checked against are real ones, captured from clusters by
other projects (tests/kubernetes/pods/README.md). What they taught: the service's
container is found by its name, never by position (the kubelet sorts the statuses by
name, and a mesh sidecar may come first); `started` is missing before Kubernetes 1.16;
a container that never started carries `startedAt: 1970-01-01T00:00:00Z` (or null).

With several replicas the instance is running when one pod is ready (its Services send
traffic to ready pods only); otherwise the first pod's trouble is the reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from servicelab.runtimes.base import RuntimeStatus
from servicelab.runtimes.kubernetes_manifests import CONTAINER
from servicelab.spec import Phase

Document = dict[str, Any]

PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
#: Terminated without the service having run: the container runtime's fault, not an exit.
START_FAILURES = ("StartError", "ContainerCannotRun")


def parse_time(value: Any) -> datetime | None:
    """An API timestamp; None for none, and for the zero times of a container that never
    started (`1970-01-01T00:00:00Z`, `0001-01-01T00:00:00Z`)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.year > 1970 else None


def _named(items: list[Document], name: str) -> Document:
    """The entry for the service's container; the first one in a pod of another maker."""
    for item in items:
        if item.get("name") == name:
            return item
    return items[0] if items else {}


def _container(pod: Document) -> Document:
    return _named((pod.get("status") or {}).get("containerStatuses") or [], CONTAINER)


def _spec_container(pod: Document) -> Document:
    return _named((pod.get("spec") or {}).get("containers") or [], CONTAINER)


def _memory_limit(pod: Document) -> str:
    limits = (_spec_container(pod).get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    if memory is None:
        return ""
    text = str(memory)
    return f" (limit {int(text) / 2**20:g} MiB)" if text.isdigit() else f" (limit {text})"


def _terminated(pod: Document, terminated: Document, restarts: int) -> RuntimeStatus:
    code = terminated.get("exitCode")
    why = terminated.get("reason") or ""
    oom = why == "OOMKilled"
    if oom:
        reason = "killed: out of memory" + _memory_limit(pod)
    elif why in START_FAILURES:
        message = (terminated.get("message") or "").strip()
        reason = f"could not start ({why})" + (f": {message}" if message else "")
    else:
        reason = f"exited with code {code}"
        message = (terminated.get("message") or "").strip()
        if message:
            reason += f": {message}"
    if restarts:
        reason += f" (restarted {restarts} times by Kubernetes)"
    return RuntimeStatus(
        Phase.FAILED,
        healthy=False,
        reason=reason,
        exit_code=code if isinstance(code, int) else None,
        oom_killed=oom,
        started_at=parse_time(terminated.get("startedAt")),
    )


def pod_status(pod: Document) -> RuntimeStatus:
    """One pod's state as a RuntimeStatus."""
    status = pod.get("status") or {}
    container = _container(pod)
    state = container.get("state") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    restarts = int(container.get("restartCount") or 0)
    image = container.get("image") or ""
    waiting = state.get("waiting") or {}
    why, message = waiting.get("reason") or "", (waiting.get("message") or "").strip()
    if why in PULL_FAILURES:
        # "Back-off pulling image "x"" repeats the image; what follows it (newer kubelets
        # add the registry's answer) is the news.
        detail = re.sub(r'^Back-off pulling image "[^"]*"[:\s]*', "", message)
        return RuntimeStatus(
            Phase.FAILED,
            healthy=False,
            reason=f"image {image} cannot be pulled ({why})" + (f": {detail}" if detail else ""),
        )
    if why == "CrashLoopBackOff":
        if last:
            return _terminated(pod, last, restarts)
        return RuntimeStatus(
            Phase.FAILED,
            healthy=False,
            reason=f"keeps crashing (CrashLoopBackOff, restarted {restarts} times by Kubernetes)",
        )
    if why in CONFIG_FAILURES:
        return RuntimeStatus(
            Phase.FAILED, healthy=False, reason=f"could not start ({why}): {message}"
        )
    if state.get("terminated"):
        return _terminated(pod, state["terminated"], restarts)
    if status.get("phase") == "Pending" and not state.get("running"):
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                text = (condition.get("message") or condition.get("reason") or "").strip()
                return RuntimeStatus(Phase.STARTING, reason=f"not scheduled: {text}")
        # The kubelet's word while it prepares the pod (ContainerCreating covers the
        # image pull); nothing when it has none (the lab then shows the last log line).
        return RuntimeStatus(Phase.STARTING, reason=why or None)
    running = state.get("running")
    if running:
        started = parse_time(running.get("startedAt"))
        if not _spec_container(pod).get("readinessProbe"):
            return RuntimeStatus(Phase.RUNNING, healthy=None, started_at=started)
        if container.get("ready"):
            return RuntimeStatus(Phase.RUNNING, healthy=True, started_at=started)
        # `started` is false until the startup probe passed; kubelets before 1.16 have no
        # startup probes and leave it out (the lab's start period covers those).
        if container.get("started", True):
            return RuntimeStatus(
                Phase.UNHEALTHY,
                healthy=False,
                reason="readiness probe failing",
                started_at=started,
            )
        return RuntimeStatus(Phase.STARTING, healthy=False, started_at=started)
    return RuntimeStatus(Phase.STARTING, reason=why or None)


def instance_status(deployment: Document, pods: list[Document]) -> RuntimeStatus:
    """The instance's state from its Deployment and the pods it selects."""
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas")
    want = int(replicas) if replicas is not None else 1
    extra: dict[str, Any] = {
        "deployment": (deployment.get("metadata") or {}).get("name"),
        "replicas": want,
        "pods": [(p.get("metadata") or {}).get("name") for p in pods],
    }
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            message = condition.get("message") or condition.get("reason")
            return RuntimeStatus(
                Phase.FAILED, healthy=False, reason=f"no pod created: {message}", extra=extra
            )
    if want == 0:
        return RuntimeStatus(Phase.RUNNING, reason="scaled to 0 replicas", extra=extra)
    if not pods:  # the ReplicaSet makes them in a moment; its failures are above
        return RuntimeStatus(Phase.STARTING, extra=extra)
    each = [pod_status(p) for p in pods]
    serving = [s for s in each if s.phase is Phase.RUNNING]
    extra["ready"] = sum(1 for s in serving if s.healthy is not False)
    if serving:
        best = serving[0]
        starts = [s.started_at for s in serving if s.started_at]
        reason = None if len(serving) >= want else f"{len(serving)} of {want} pods serving"
        return RuntimeStatus(
            Phase.RUNNING,
            healthy=best.healthy,
            reason=reason,
            started_at=min(starts) if starts else None,
            extra=extra,
        )
    order = (Phase.FAILED, Phase.UNHEALTHY, Phase.STARTING)
    worst = min(each, key=lambda s: order.index(s.phase) if s.phase in order else len(order))
    worst.extra = extra
    return worst
