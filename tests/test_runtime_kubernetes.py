"""KubernetesRuntime: its manifests against the official schemas, its API traffic against
a stateful API emulator, and its reading of real pod status documents.

No API server can run on these machines. The strongest checks available instead:

- every manifest the runtime and deploy/kubernetes produce validates, strictly (no
  unknown field), against the schemas of Kubernetes 1.37 that `kubernetes-validate` ships;
- the runtime's calls go over HTTP to kmock's `KubernetesEmulator`, an in-memory API
  server that stores what is created and serves reads, lists and deletes. It runs no
  controllers: the test plays the kubelet, adding the pods a Deployment would get, with
  status documents captured from real clusters by other projects (tests/kubernetes/pods,
  whose README names the repository, path and commit of each), and serving their logs;
- tests/test_runtime_kubernetes_podman.py runs the generated pod for real with Podman.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from lightkube.codecs import from_dict

from servicelab.config import Settings
from servicelab.runtimes.base import SpecError
from servicelab.runtimes.egress import Egress
from servicelab.runtimes.kubernetes import KubernetesRuntime
from servicelab.runtimes.kubernetes_api import KubeApi, load_config
from servicelab.runtimes.kubernetes_manifests import (
    LABEL_REVISION,
    ClusterOptions,
    instance_manifests,
    namespace,
)
from servicelab.runtimes.select import make_runtime
from servicelab.spec import HealthCheck, Phase, Resources, ServiceSpec, normalize

from . import runtime_contract as contract
from .conftest import make_settings, open_lab
from .kubernetes_cluster import POD_STATES, Cluster, Kubelet, emulated

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.37"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
GPU_OPTIONS = ClusterOptions(
    instance_id="servicelab-3f9a0c1d",
    namespace_per_project=True,
    node_selector={"nodepool": "gpu"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    storage_class="fast-ssd",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def gpu_spec() -> ServiceSpec:
    return normalize(
        ServiceSpec(
            project="vision",
            name="detector",
            image="registry.example.com/vision/detector:2",
            ports=[8080, 9090],
            resources=Resources(cpus=1.5, memory=2 * 2**30, gpus=1),
            replicas=3,
            health=HealthCheck(path="/health", interval=5, timeout=2, retries=3, start_period=30),
        )
    )


# --- manifests: schema, names, secrets ----------------------------------------------------


def test_every_manifest_validates_strictly() -> None:
    code = normalize(
        ServiceSpec(project="proj1", name="coder", code="git+https://git.example.com/a.git@v1")
    )
    manifests = [
        *instance_manifests(GPU_OPTIONS, gpu_spec(), "a1b2c3", {"LAB_API_TOKEN": "t0ken"}),
        *instance_manifests(ClusterOptions(instance_id="lab"), code, "d4e5f6", {"PORT": "8091"}),
        namespace(GPU_OPTIONS, "vision"),
    ]
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        manifests += [m for m in yaml.safe_load_all(path.read_text()) if m]
    kinds = set()
    for manifest in manifests:
        kinds.add(manifest["kind"])
        assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True) == K8S_VERSION
        from_dict(manifest)  # lightkube's models, from the same OpenAPI document, read it too
        name = manifest["metadata"]["name"]
        assert DNS_1035.match(name) or manifest["kind"] in ("ClusterRole", "RoleBinding"), name
    assert {"Deployment", "Service", "Secret", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds
    assert {"ServiceAccount", "Role", "RoleBinding", "Ingress"} <= kinds


def test_strict_validation_refuses_an_unknown_field() -> None:
    deployment = instance_manifests(GPU_OPTIONS, gpu_spec(), "a1b2c3", {})[-1]
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="gpus"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_deployment_carries_resources_probes_and_no_secret() -> None:
    token = "s3cret-lab-token"
    manifests = instance_manifests(GPU_OPTIONS, gpu_spec(), "a1b2c3", {"LAB_API_TOKEN": token})
    by_kind = {m["kind"]: m for m in manifests}
    secret, deployment = by_kind["Secret"], by_kind["Deployment"]
    assert base64.b64decode(secret["data"]["LAB_API_TOKEN"]).decode() == token
    assert token not in json.dumps(manifests)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["resources"]["limits"] == {
        "cpu": "1500m",
        "memory": str(2 * 2**30),
        "nvidia.com/gpu": "1",
    }
    assert pod["nodeSelector"] == {"nodepool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8080}
    assert container["livenessProbe"]["failureThreshold"] == 3
    assert container["startupProbe"]["failureThreshold"] * 5 >= 30  # covers the start period
    assert deployment["metadata"]["namespace"] == "servicelab-vision"
    ports = sorted(m["spec"]["ports"][0]["port"] for m in manifests if m["kind"] == "Service")
    assert ports == [8080, 9090]
    assert by_kind["PersistentVolumeClaim"]["spec"]["storageClassName"] == "fast-ssd"


def test_network_policy_admits_the_lab_and_the_project_only() -> None:
    manifests = instance_manifests(GPU_OPTIONS, gpu_spec(), "a1b2c3", {})
    policy = next(m for m in manifests if m["kind"] == "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    lab, project = rule["from"]
    assert lab["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "lab"
    assert project["podSelector"]["matchLabels"]["servicelab.dev/project"] == "vision"
    assert {p["port"] for p in rule["ports"]} == {8080, 9090}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_egress_reaches_public_addresses_the_lab_and_dns_only() -> None:
    manifests = instance_manifests(GPU_OPTIONS, gpu_spec(), "a1b2c3", {})
    policy = next(m for m in manifests if m["kind"] == "NetworkPolicy")
    peers, dns, public = policy["spec"]["egress"]
    assert peers["to"] == policy["spec"]["ingress"][0]["from"]  # the lab and the project
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in dns["ports"]} == {53}
    v4, v6 = (block["ipBlock"] for block in public["to"])
    assert v4["cidr"] == "0.0.0.0/0" and "169.254.0.0/16" in v4["except"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"} <= set(v4["except"])
    assert v6["cidr"] == "::/0" and {"fc00::/7", "fe80::/10"} <= set(v6["except"])


def test_network_policy_egress_follows_the_operators_rule() -> None:
    egress = Egress.parse("none,10.1.2.3:5432")
    options = replace(GPU_OPTIONS, egress=egress)
    policy = next(
        m
        for m in instance_manifests(options, gpu_spec(), "a1b2c3", {})
        if m["kind"] == "NetworkPolicy"
    )
    rules = policy["spec"]["egress"]
    assert not any("0.0.0.0/0" in str(rule) for rule in rules)  # no internet
    assert {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    } in rules


def test_long_names_stay_dns_labels_and_apart() -> None:
    a = normalize(ServiceSpec(project="p" * 63, name="s" * 63, image="x:1", ports=[80]))
    b = normalize(ServiceSpec(project="p" * 63, name="s" * 62 + "t", image="x:1", ports=[80]))
    names_a = {m["metadata"]["name"] for m in instance_manifests(GPU_OPTIONS, a, "aaaaaa", {})}
    names_b = {m["metadata"]["name"] for m in instance_manifests(GPU_OPTIONS, b, "aaaaaa", {})}
    assert not names_a & names_b
    assert all(DNS_1035.match(n) for n in names_a | names_b)


# --- the runtime against the emulator ------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Cluster, str]]:
    async with emulated() as pair:
        yield pair


def make(server: str, instance_id: str = "servicelab-test1") -> KubernetesRuntime:
    return KubernetesRuntime(
        ClusterOptions(instance_id=instance_id), KubeApi(load_config(server=server))
    )


def web_spec(replicas: int = 2) -> ServiceSpec:
    return normalize(
        ServiceSpec(project="proj1", name="web", image="web:1", ports=[8080], replicas=replicas)
    )


async def test_create_status_adopt_update_delete_purge(cluster: tuple[Cluster, str]) -> None:
    fake, server = cluster
    runtime = make(server)
    spec = await runtime.prepare(web_spec())
    handle = await runtime.start(spec, {"LAB_API_TOKEN": "tok-1", "GREETING": "hi"})
    assert (await runtime.status(handle)).phase is Phase.STARTING  # no pods yet
    assert await runtime.address(handle, 8080) is None

    await fake.add_pod(runtime, handle, "not_ready_beside_sidecar")
    assert (await runtime.status(handle)).phase is Phase.UNHEALTHY
    assert await runtime.address(handle, 8080) is not None  # Kubernetes decides, per pod
    first = await fake.add_pod(runtime, handle, "running_ready")
    status = await runtime.status(handle)
    assert (status.phase, status.healthy) == (Phase.RUNNING, True)
    assert status.reason == "1 of 2 pods serving"
    address = await runtime.address(handle, 8080)
    assert address is not None and address.host == f"{handle['instance']}-8080.servicelab.svc"
    assert await runtime.address(handle, 9999) is None
    secret = await runtime.api.get("Secret", f"{handle['instance']}-env", "servicelab")
    assert secret is not None and "tok-1" not in json.dumps(
        await runtime.api.get("Deployment", handle["instance"], "servicelab")
    )

    # A restarted lab adopts it exactly once; a half-started instance's pieces go.
    orphan = instance_manifests(runtime.options, spec, "0rphan", {"LAB_API_TOKEN": "x"})
    for manifest in orphan[1:-1]:  # killed after the Secret and Services, before the Deployment
        await runtime.api.create(manifest)
    again = make(server)
    adopted = await again.adopt()
    assert [a.key for a in adopted] == ["proj1--web"]
    assert again.instance_key(adopted[0].handle) == runtime.instance_key(handle)
    assert not any("0rphan" in name for name in fake.names("secrets") | fake.names("services"))
    assert await make(server, "another-lab").adopt() == []

    # Update: a new revision beside the old one; the old is stopped once the new serves.
    new_spec = web_spec(replicas=3)
    new = await again.start(new_spec, {"LAB_API_TOKEN": "tok-2"})
    assert new["revision"] != handle["revision"]
    assert (await again.status(handle)).phase is Phase.RUNNING  # the old keeps serving
    await fake.add_pod(again, new, "running_ready")
    assert (await again.status(new)).healthy is True
    await again.stop(handle)
    assert (await again.status(handle)).phase is Phase.STOPPED
    assert fake.exists("deployments", new["instance"])
    assert not fake.exists("secrets", f"{handle['instance']}-env")
    assert fake.names("persistentvolumeclaims") == {"sl-proj1--web-data"}
    del first

    # Delete keeps the data until purged.
    await again.stop(new)
    await again.stop(new)  # idempotent
    assert (await again.status(new)).phase is Phase.STOPPED
    assert fake.names("deployments") == set()
    assert await again.kept_data() == ["proj1--web"]
    await again.delete_data(new_spec)
    assert await again.kept_data() == []
    assert fake.names("persistentvolumeclaims") == set()
    await again.close()
    await runtime.close()


# --- what users see of real pods, through the emulator ----------------------------------

#: For each captured document (tests/kubernetes/pods), what `status()` must say: the
#: phase, the reason word for word (it names the cause), the exit code and OOM flag.
SEEN: dict[str, tuple[Phase, str | None, int | None, bool]] = {
    "running_ready": (Phase.RUNNING, None, None, False),
    "not_ready_beside_sidecar": (Phase.UNHEALTHY, "readiness probe failing", None, False),
    "image_pull_backoff": (
        Phase.FAILED,
        "image gcr.io/heptio-images/ks-guestbook-demo:0.3 cannot be pulled (ImagePullBackOff)",
        None,
        False,
    ),
    "image_pull_backoff_gke": (
        Phase.FAILED,
        "image notanimage/thatexistsanywhere:badtag cannot be pulled (ImagePullBackOff)",
        None,
        False,
    ),
    "crash_loop_backoff": (
        Phase.FAILED,
        "exited with code 1 (restarted 3 times by Kubernetes)",
        1,
        False,
    ),
    "crash_loop_backoff_exit_0": (
        Phase.FAILED,
        "exited with code 0 (restarted 2 times by Kubernetes)",
        0,
        False,
    ),
    # Killed for memory with exit code 1 (not 137): the reason tells, and the limit is
    # the one the runtime set.
    "oom_killed": (Phase.FAILED, "killed: out of memory (limit 256 MiB)", 1, True),
    "unschedulable": (
        Phase.STARTING,
        "not scheduled: 0/1 nodes are available: 1 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not "
        "helpful for scheduling.",
        None,
        False,
    ),
    "unschedulable_resources": (
        Phase.STARTING,
        "not scheduled: 0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.",
        None,
        False,
    ),
    "start_error": (
        Phase.FAILED,
        "could not start (StartError): failed to create containerd task: failed to create "
        "shim task: OCI runtime create failed: runc create failed: unable to start container "
        'process: error during container init: error mounting "/var/lib/kubelet/pods/'
        'e62563fa-7f61-4103-8211-1d63f247064b/etc-hosts" to rootfs at "/etc/hosts": create '
        "mount destination for /etc/hosts mount: make parent dir of file bind-mount: mkdirat "
        "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c252c1fcf058bf99efe9a0970ae04ad"
        "ec6fa615f198606e4c9a65f93eb39857f/rootfs/etc: read-only file system: unknown",
        128,
        False,
    ),
}


def test_every_captured_document_has_its_expectation() -> None:
    assert set(SEEN) == set(POD_STATES)


def probed_spec() -> ServiceSpec:
    """A service with a health check (so its pods have probes) and a memory limit."""
    return normalize(
        ServiceSpec(
            project="proj1",
            name="real",
            image="web:1",
            ports=[8080],
            resources=Resources(memory=256 * 2**20),
            health=HealthCheck(path="/health"),
        )
    )


@pytest.mark.parametrize("state", sorted(SEEN))
async def test_status_of_a_real_pod(state: str, cluster: tuple[Cluster, str]) -> None:
    """The runtime creates the instance over HTTP, the pod the ReplicaSet would make
    carries a captured status, and `status()` reads it back from the emulator."""
    fake, server = cluster
    runtime = make(server)
    handle = await runtime.start(await runtime.prepare(probed_spec()), {})
    await fake.add_pod(runtime, handle, state)
    status = await runtime.status(handle)
    phase, reason, exit_code, oom = SEEN[state]
    assert (status.phase, status.reason, status.exit_code, status.oom_killed) == (
        phase,
        reason,
        exit_code,
        oom,
    )
    assert status.healthy is {Phase.RUNNING: True, Phase.STARTING: None}.get(phase, False)
    if state == "running_ready":
        assert status.started_at == datetime(2024, 10, 15, 16, 0, 42, tzinfo=UTC)
    if state == "start_error":
        assert status.started_at is None  # "1970-01-01T00:00:00Z": it never started
    assert status.extra["pods"] == [f"{handle['instance']}-7d9c8b6f5-00000"]
    await runtime.stop(handle)
    await runtime.close()


async def test_one_ready_replica_serves_while_another_fails(
    cluster: tuple[Cluster, str],
) -> None:
    fake, server = cluster
    runtime = make(server)
    handle = await runtime.start(await runtime.prepare(probed_spec()), {})
    await fake.add_pod(runtime, handle, "oom_killed")
    assert (await runtime.status(handle)).phase is Phase.FAILED
    await fake.add_pod(runtime, handle, "running_ready")
    status = await runtime.status(handle)
    assert (status.phase, status.healthy) == (Phase.RUNNING, True)
    assert status.extra["ready"] == 1
    vanished = await runtime.start(await runtime.prepare(probed_spec()), {})
    await runtime.api.delete("Deployment", vanished["instance"], "servicelab")
    assert (await runtime.status(vanished)).reason == (
        f"Deployment {vanished['instance']} vanished"
    )
    await runtime.close()


async def test_logs_tail_since_follow(cluster: tuple[Cluster, str]) -> None:
    fake, server = cluster
    runtime = make(server)
    handle = await runtime.start(await runtime.prepare(web_spec()), {})
    a = await fake.add_pod(runtime, handle, "running_ready")
    b = await fake.add_pod(runtime, handle, "running_ready")
    now = datetime.now(UTC)
    fake.log(a, "a old", now - timedelta(minutes=5))
    fake.log(b, "b old", now - timedelta(minutes=4))
    fake.log(a, "a new", now - timedelta(seconds=2))
    fake.log(b, "b new", now - timedelta(seconds=1))
    assert [line async for line in runtime.logs(handle)] == ["a old", "b old", "a new", "b new"]
    assert [line async for line in runtime.logs(handle, tail=2)] == ["a new", "b new"]
    since = now - timedelta(seconds=3)
    assert [line async for line in runtime.logs(handle, since=since)] == ["a new", "b new"]

    followed: list[str] = []

    async def follow() -> None:
        async for line in runtime.logs(handle, tail=0, follow=True):
            followed.append(line)

    task = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        # Lines written before the stream opened are not followed (tail=0): write until
        # one comes through.
        while not followed:
            fake.log(a, f"live {len(fake.lines[a])}")
            await asyncio.sleep(0.05)
        await runtime.stop(handle)
        await task  # ends with the instance
    assert followed and all(line.startswith("live ") for line in followed)
    await runtime.close()


async def test_code_services_and_refusals(cluster: tuple[Cluster, str], tmp_path: Path) -> None:
    _, server = cluster
    runtime = make(server)
    (tmp_path / "__main__.py").write_text("print('hi')\n")
    with pytest.raises(SpecError, match="VCS URL"):
        await runtime.prepare(
            normalize(ServiceSpec(project="proj1", name="code1", code=str(tmp_path)))
        )
    with pytest.raises(SpecError, match="port"):
        await runtime.prepare(normalize(ServiceSpec(project="proj1", name="img", image="x:1")))
    code = "git+https://git.example.com/team/model.git@v2#subdirectory=serve"
    spec = await runtime.prepare(normalize(ServiceSpec(project="proj1", name="code2", code=code)))
    handle = await runtime.start(spec, {"LAB_API_TOKEN": "t"})
    deployment = await runtime.api.get("Deployment", handle["instance"], "servicelab")
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "servicelab/runtime:latest"
    assert container["ports"][0]["containerPort"] == 8091
    secret = await runtime.api.get("Secret", f"{handle['instance']}-env", "servicelab")
    assert secret is not None
    assert base64.b64decode(secret["data"]["EXECUTE_CODE"]).decode() == code
    await runtime.close()


def test_selected_by_setting(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    settings = Settings(
        runtime="kubernetes",
        instance_id="lab7",
        kubernetes_kubeconfig=str(kubeconfig),
        kubernetes_namespace="ml",
        kubernetes_lab_namespace="ml-lab",
    )
    runtime = make_runtime(settings)
    assert isinstance(runtime, KubernetesRuntime) and runtime.supports_replicas
    assert (runtime.options.namespace, runtime.options.lab_namespace) == ("ml", "ml-lab")
    assert LABEL_REVISION.startswith("servicelab.dev/")


# --- the shared runtime contract, with the kubelet running pods as local processes ----------


def echo_spec() -> ServiceSpec:
    return ServiceSpec(project="contract", name="echo", image="echo:test", ports=[8091])


@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_contract(check: Any, cluster: tuple[Cluster, str], tmp_path: Path) -> None:
    fake, server = cluster
    runtime = make(server)
    async with Kubelet(fake, runtime, tmp_path) as kubelet:
        runtime.service_address = kubelet.address
        await check(runtime, echo_spec())
    await runtime.close()


async def test_contract_adopt(cluster: tuple[Cluster, str], tmp_path: Path) -> None:
    fake, server = cluster
    runtime = make(server)
    async with Kubelet(fake, runtime, tmp_path) as kubelet:
        runtime.service_address = kubelet.address

        def restarted() -> KubernetesRuntime:
            again = make(server)
            again.service_address = kubelet.address
            return again

        await contract.check_adopt(runtime, restarted, echo_spec())
    await runtime.close()


# --- through the lab's API --------------------------------------------------------------------


@pytest.fixture
def lab_on_emulator(tmp_path: Path) -> Iterator[tuple[Any, Cluster]]:
    """An in-process lab with SERVICELAB_RUNTIME=kubernetes, its kubeconfig naming the
    emulator (which runs in a thread of its own: the lab's TestClient has its own loop)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    found: dict[str, Any] = {}
    stop = asyncio.Event()

    async def serve() -> None:
        async with emulated() as (cluster, url):
            found.update(cluster=cluster, url=url)
            loop.call_soon_threadsafe(ready.set)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": found["url"]}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    settings = make_settings(
        tmp_path / "data",
        runtime="kubernetes",
        instance_id="lab-api-test",
        kubernetes_kubeconfig=str(kubeconfig),
    )
    try:
        for lab in open_lab(settings):
            yield lab, found["cluster"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def test_lab_deploys_replicas_and_refuses_host_paths(
    lab_on_emulator: tuple[Any, Cluster], tmp_path: Path
) -> None:
    lab, fake = lab_on_emulator
    lab.create_project("team1")
    r = lab.client.put(
        "/api/projects/team1/services/web",
        headers=lab.headers(),
        json={"image": "web:1", "ports": [8080], "replicas": 3},
    )
    assert r.status_code == 201, r.text
    (name,) = fake.names("deployments")
    assert fake.find("deployments", name).raw["spec"]["replicas"] == 3

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "__main__.py").write_text("print('hi')\n")
    r = lab.client.put(
        "/api/projects/team1/services/local-code",
        headers=lab.headers(),
        json={"code": str(tmp_path / "code")},
    )
    assert r.status_code == 400, r.text
    assert "VCS URL" in r.json()["errors"]["message"]


def service_seen(lab: Any, path: str, done: Any) -> dict[str, Any]:
    """GET the service until `done(service)`, with a deadline."""
    deadline = time.monotonic() + 30
    while True:
        r = lab.client.get(path, headers=lab.headers())
        assert r.status_code == 200, r.text
        seen: dict[str, Any] = r.json()["data"]
        if done(seen):
            return seen
        assert time.monotonic() < deadline, f"the service stayed {seen['status']}: {seen['reason']}"
        time.sleep(0.05)


def test_users_see_why_the_pods_are_not_up(lab_on_emulator: tuple[Any, Cluster]) -> None:
    """What the lab's API says of real pods: the scheduler's message while no node takes
    the pod, then the OOM kill with the memory limit."""
    lab, fake = lab_on_emulator
    lab.create_project("team2")
    path = "/api/projects/team2/services/big"
    r = lab.client.put(
        path,
        headers=lab.headers(),
        json={"image": "web:1", "ports": [8080], "resources": {"memory": "256m"}, "restart": "no"},
    )
    assert r.status_code == 201, r.text
    (name,) = fake.names("deployments")
    deployment = fake.find("deployments", name).raw
    pods = f"{fake.url}/api/v1/namespaces/{deployment['metadata']['namespace']}/pods"

    pending = fake.pod_of(deployment, "unschedulable_resources")
    httpx.post(pods, json=pending).raise_for_status()
    seen = service_seen(lab, path, lambda s: s["reason"] and "scheduled" in s["reason"])
    assert (seen["status"], seen["reason"]) == (
        "starting",
        "not scheduled: 0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.",
    )

    # The scheduler placed it after all; the container is then killed for memory.
    httpx.delete(f"{pods}/{pending['metadata']['name']}").raise_for_status()
    httpx.post(pods, json=fake.pod_of(deployment, "oom_killed")).raise_for_status()
    seen = service_seen(lab, path, lambda s: s["status"] == "failed")
    assert seen["reason"] == "killed: out of memory (limit 256 MiB)"
    assert seen["isHealthy"] is False
