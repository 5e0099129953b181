"""The Kubernetes objects of one service instance, as plain dicts (no I/O here).

One *instance* (what `Runtime.start` returns a handle for) is a revision of a service:

- a Secret `<instance>-env` with its whole environment (`envFrom`), so that
  `LAB_API_TOKEN` and every other value never appear in the Deployment's manifest;
- a Deployment `<instance>` with `spec.replicas` pods, updated by rolling update
  (`maxUnavailable: 0`: old pods stay until new ones are ready);
- one ClusterIP Service `<instance>-<port>` per port: where the lab's proxy reaches it;
- a NetworkPolicy `<instance>`: only the lab's pods and the pods of the same project may
  connect, on the service's ports; other projects are kept out. Its egress half says
  where the pods' own connections may go, as `SERVICELAB_SERVICE_EGRESS` does on every
  runtime (`egress.py`): the lab's pods, the cluster's DNS, the same project's pods, what
  the operator allows and (egress `internet`) public addresses, never private or
  link-local ranges (where the cluster's network plugin enforces NetworkPolicies).

The service's `/data` is a PersistentVolumeClaim `<service>-data` shared by its
instances and kept when they stop, until `delete_data` (a delete with purge).

Names: `sl-<project>--<service>` (cut and hashed to fit DNS labels) plus a random
revision, so that a new instance never collides with the one it replaces. Labels say
which lab, project, service and revision an object belongs to (`adopt` lists by them);
annotations carry what does not fit a label value (the key, the ports).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from servicelab.runtimes.base import DATA_DIR_ENV
from servicelab.runtimes.egress import BLOCKED_V4, BLOCKED_V6, Egress
from servicelab.runtimes.limits import Limits, effective_resources
from servicelab.runtimes.runtime_image import SERVICE_HOME, SERVICE_UID
from servicelab.spec import ServiceSpec

Manifest = dict[str, Any]

GROUP = "servicelab.dev"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_PROJECT = f"{GROUP}/project"
LABEL_SERVICE = f"{GROUP}/service"
LABEL_REVISION = f"{GROUP}/revision"
ANNOTATION_KEY = f"{GROUP}/key"
ANNOTATION_PORTS = f"{GROUP}/ports"
ANNOTATION_CONNECTION_PORT = f"{GROUP}/connection-port"
#: The labels of the lab's own pods (deploy/kubernetes/lab.yaml): the only pods besides a
#: project's own that may reach its services.
LAB_POD_LABELS = {"app.kubernetes.io/name": "servicelab", "app.kubernetes.io/component": "lab"}

#: Where the service's claim is mounted, as ML Lab's best practices say.
DATA_MOUNT = "/data"
CONTAINER = "service"
PULL_POLICIES = {"if-not-present": "IfNotPresent", "always": "Always", "never": "Never"}

#: The longest service base name: `<base>-<revision 6>-<port 5>` must stay a DNS label.
MAX_BASE = 44
#: Kubernetes env var names from a Secret: a C identifier (with '-' and '.' allowed).
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True)
class ClusterOptions:
    """What the lab's settings say about where and how services run in the cluster."""

    instance_id: str
    namespace: str = "servicelab"
    namespace_per_project: bool = False
    lab_namespace: str = "servicelab"
    runtime_image: str = "servicelab/runtime:latest"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    storage_class: str = ""
    data_size: str = "1Gi"
    #: The lab's default memory and CPU limits (its process limit is the kubelet's
    #: `podPidsLimit`, the cluster operator's: a pod spec has no field for it).
    limits: Limits = Limits()
    #: Where the pods' own connections may go (SERVICELAB_SERVICE_EGRESS).
    egress: Egress = Egress()

    def namespace_of(self, project: str) -> str:
        if self.namespace_per_project:
            return dns_label(f"{self.namespace}-{project}", 63)
        return self.namespace


def dns_label(text: str, limit: int) -> str:
    """`text` as a DNS label of at most `limit` characters, starting with a letter; cut
    names end in a hash of the whole, so that two long names never become one."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if not cleaned[0].isalpha():
        cleaned = f"s-{cleaned}"
    if len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{cleaned[: limit - 7].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("-._")
    return cleaned or "x"


def base_name(spec: ServiceSpec) -> str:
    return dns_label(f"sl-{spec.key}", MAX_BASE)


def instance_name(spec: ServiceSpec, revision: str) -> str:
    return f"{base_name(spec)}-{revision}"


def claim_name(spec: ServiceSpec) -> str:
    return f"{base_name(spec)}-data"


def port_service_name(instance: str, port: int) -> str:
    return f"{instance}-{port}"


def secret_name(instance: str) -> str:
    return f"{instance}-env"


def service_labels(options: ClusterOptions, spec: ServiceSpec) -> dict[str, str]:
    return {
        LABEL_MANAGED: "servicelab",
        LABEL_INSTANCE: label_value(options.instance_id),
        LABEL_PROJECT: label_value(spec.project),
        LABEL_SERVICE: label_value(spec.name),
    }


def instance_labels(options: ClusterOptions, spec: ServiceSpec, revision: str) -> dict[str, str]:
    return service_labels(options, spec) | {LABEL_REVISION: revision}


def _metadata(
    name: str, namespace: str, labels: dict[str, str], spec: ServiceSpec
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": {
            ANNOTATION_KEY: spec.key,
            ANNOTATION_PORTS: ",".join(str(p) for p in spec.ports),
            ANNOTATION_CONNECTION_PORT: str(spec.connection_port or ""),
        },
    }


def secret(
    options: ClusterOptions, spec: ServiceSpec, revision: str, env: dict[str, str]
) -> Manifest:
    name = instance_name(spec, revision)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(
            secret_name(name),
            options.namespace_of(spec.project),
            instance_labels(options, spec, revision),
            spec,
        ),
        "type": "Opaque",
        # `data` (base64), not `stringData`: what the API server stores and returns, and
        # what Podman's `kube play` reads.
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in env.items()},
    }


def claim(options: ClusterOptions, spec: ServiceSpec) -> Manifest:
    body: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": options.data_size}},
    }
    if options.storage_class:
        body["storageClassName"] = options.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            claim_name(spec),
            options.namespace_of(spec.project),
            service_labels(options, spec),
            spec,
        ),
        "spec": body,
    }


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


def probes(spec: ServiceSpec) -> dict[str, Any]:
    """The spec's HTTP health check as startup, readiness and liveness probes.

    The startup probe covers the start period (liveness waits for it); readiness keeps a
    pod out of its Services until it answers; liveness restarts a pod that stops
    answering. Kubernetes counts 200-399 as healthy, the lab's own rule; the path is the
    one the lab's prober asks (behind the route prefix when the service keeps it).
    """
    health = spec.health
    port = spec.health_port
    path = spec.probe_path(port) if port is not None else None
    if path is None or port is None:
        return {}
    period = _seconds(health.interval)
    check = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": _seconds(health.timeout),
    }
    return {
        "startupProbe": check | {"failureThreshold": _seconds(health.start_period / period) + 1},
        "readinessProbe": check | {"failureThreshold": 1},
        "livenessProbe": check | {"failureThreshold": int(health.retries)},
    }


def container_resources(spec: ServiceSpec, defaults: Limits | None = None) -> dict[str, Any]:
    """What the spec asks for is requested and limited alike (it gets what it asks, no
    more); the lab's defaults (`limits.py`) are limits only, requested as 0: a ceiling
    for a runaway service, not a reservation that would keep small services off a node
    (without a request, Kubernetes would request the limit)."""
    asked = spec.resources
    r = effective_resources(asked, defaults or Limits())
    limits: dict[str, str] = {}
    if r.cpus:
        limits["cpu"] = f"{max(1, round(r.cpus * 1000))}m"
    if r.memory:
        limits["memory"] = str(int(r.memory))
    if r.gpus:
        limits["nvidia.com/gpu"] = str(int(r.gpus))
    if not limits:
        return {}
    requests = dict(limits)
    if not asked.cpus and "cpu" in requests:
        requests["cpu"] = "0"
    if not asked.memory and "memory" in requests:
        requests["memory"] = "0"
    return {"requests": requests, "limits": limits}


def deployment(options: ClusterOptions, spec: ServiceSpec, revision: str) -> Manifest:
    name = instance_name(spec, revision)
    labels = instance_labels(options, spec, revision)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or options.runtime_image,
        "imagePullPolicy": PULL_POLICIES.get(spec.pull_policy, "IfNotPresent"),
        "envFrom": [{"secretRef": {"name": secret_name(name)}}],
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in spec.ports],
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
        "securityContext": {"allowPrivilegeEscalation": False},
        **probes(spec),
    }
    resources = container_resources(spec, options.limits)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        # A service gets no credentials for the cluster's API and no variables naming
        # the other Services of its namespace.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # SIGTERM, then SIGKILL after the lab's default stop timeout (Runtime.stop).
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name(spec)}}],
    }
    if spec.code:
        harden_code_pod(pod, container)
    if options.node_selector:
        pod["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod["tolerations"] = [dict(t) for t in options.tolerations]
    metadata = _metadata(name, options.namespace_of(spec.project), labels, spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": dict(labels), "annotations": metadata["annotations"]},
                "spec": pod,
            },
        },
    }


def harden_code_pod(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """A member's code runs as on Docker (docs/security.md): the runtime image's
    unprivileged user, a read-only root file system, no capabilities; writable are only
    `/data` (the claim, made the user's group by fsGroup), `/tmp` and the user's HOME
    (virtual environment and caches), both emptyDirs of the pod."""
    pod["securityContext"] = {
        "runAsUser": SERVICE_UID,
        "runAsGroup": SERVICE_UID,
        "runAsNonRoot": True,
        "fsGroup": SERVICE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for name, path in (("tmp", "/tmp"), ("home", SERVICE_HOME)):
        pod["volumes"].append({"name": name, "emptyDir": {}})
        container["volumeMounts"].append({"name": name, "mountPath": path})


def port_services(options: ClusterOptions, spec: ServiceSpec, revision: str) -> list[Manifest]:
    name = instance_name(spec, revision)
    labels = instance_labels(options, spec, revision)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(
                port_service_name(name, port), options.namespace_of(spec.project), labels, spec
            ),
            "spec": {
                "type": "ClusterIP",
                "selector": dict(labels),
                "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
            },
        }
        for port in spec.ports
    ]


def network_policy(options: ClusterOptions, spec: ServiceSpec, revision: str) -> Manifest:
    """Ingress to the instance's pods only from the lab's pods and the project's own."""
    name = instance_name(spec, revision)
    labels = instance_labels(options, spec, revision)
    same_project = {
        LABEL_INSTANCE: labels[LABEL_INSTANCE],
        LABEL_PROJECT: labels[LABEL_PROJECT],
    }
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": options.lab_namespace}
            },
            "podSelector": {"matchLabels": dict(LAB_POD_LABELS)},
        },
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": options.namespace_of(spec.project)}
            },
            "podSelector": {"matchLabels": same_project},
        },
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name, options.namespace_of(spec.project), labels, spec),
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": peers, "ports": [{"protocol": "TCP", "port": p} for p in spec.ports]}
            ],
            "egress": egress_rules(options.egress, peers),
        },
    }


#: The cluster's DNS, as kubeadm, k3s and kind label it.
CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def egress_rules(egress: Egress, peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lab's and the project's pods, DNS, the allowed, then (with `internet`) every
    public address: `0.0.0.0/0` and `::/0` less the blocked ranges."""
    dns_ports = [{"protocol": proto, "port": 53} for proto in ("UDP", "TCP")]
    rules: list[dict[str, Any]] = [{"to": peers}, {"to": [CLUSTER_DNS], "ports": dns_ports}]
    for allowed in egress.allow:
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": allowed.cidr}}]}
        if allowed.port:
            rule["ports"] = [{"protocol": "TCP", "port": allowed.port}]
        rules.append(rule)
    if egress.internet:
        public = [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(BLOCKED_V4)}},
            {"ipBlock": {"cidr": "::/0", "except": list(BLOCKED_V6)}},
        ]
        rules.append({"to": public})
    return rules


def namespace(options: ClusterOptions, project: str) -> Manifest:
    """A project's namespace (with `namespace_per_project`), labelled as the lab's."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": options.namespace_of(project),
            "labels": {
                LABEL_MANAGED: "servicelab",
                LABEL_INSTANCE: label_value(options.instance_id),
                LABEL_PROJECT: label_value(project),
            },
        },
    }


def instance_manifests(
    options: ClusterOptions, spec: ServiceSpec, revision: str, env: dict[str, str]
) -> list[Manifest]:
    """Everything `start` creates, in the order it creates it (the claim first)."""
    environment = dict(env)
    environment[DATA_DIR_ENV] = DATA_MOUNT
    return [
        claim(options, spec),
        secret(options, spec, revision, environment),
        network_policy(options, spec, revision),
        *port_services(options, spec, revision),
        deployment(options, spec, revision),
    ]
