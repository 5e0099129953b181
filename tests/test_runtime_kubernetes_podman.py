"""The Kubernetes runtime's pod, run for real by `podman kube play`.

No API server runs here, but Podman runs the Deployment, claim and Secret the runtime
generates, on the images the tests build (scripts/setup-podman.sh loads them). Two things
stand in for the cluster: a `hostPort` on 127.0.0.1 for the ClusterIP Service (the only
change made to the generated pod), and a Podman secret holding the Secret's `data` map
(the form Podman 4.3 reads; a `kind: Secret` in the YAML it stores unparsed). Podman runs
no health checks by itself here: `podman healthcheck run` runs the check it made of the
probe.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from servicelab.runtimes.kubernetes_manifests import ClusterOptions, instance_manifests
from servicelab.spec import HealthCheck, ServiceSpec, normalize

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "servicelab/example-fastapi:test"
RUNTIME_IMAGE = "servicelab/runtime:test"
HOSTILE = ROOT / "tests" / "services" / "hostile-code"
CODE_PATH = "/workspace/fetched"
DEADLINE = 60.0

pytestmark = pytest.mark.podman


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def podman_ready() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-podman.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/setup-podman.sh failed:\n{result.stdout}\n{result.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Played:
    """The runtime's manifests for one instance, played by Podman."""

    def __init__(
        self,
        tmp_path: Path,
        spec: ServiceSpec,
        env: dict[str, str],
        *,
        new_claim: bool,
        image: str = IMAGE,
    ) -> None:
        """new_claim: False when the claim exists already (the runtime's create of it
        then finds it; Podman would refuse to create its volume again)."""
        self.revision = secrets.token_hex(3)
        self.port = free_port()
        manifests = instance_manifests(
            ClusterOptions(instance_id="podman-kube-test", runtime_image=image),
            spec,
            self.revision,
            env,
        )
        for manifest in manifests:
            kubernetes_validate.validate(manifest, "1.37", strict=True)
        by_kind = {m["kind"]: m for m in manifests}
        self.secret = by_kind["Secret"]["metadata"]["name"]
        self.claim = by_kind["PersistentVolumeClaim"]["metadata"]["name"]
        deployment: dict[str, Any] = by_kind["Deployment"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["ports"][0].update(hostPort=self.port, hostIP="127.0.0.1")
        self.pod = f"{deployment['metadata']['name']}-pod-0"
        self.container = f"{self.pod}-{container['name']}"
        self.yaml = tmp_path / f"{self.revision}.yaml"
        documents = [by_kind["PersistentVolumeClaim"]] if new_claim else []
        self.yaml.write_text(yaml.safe_dump_all([*documents, deployment]))
        data = tmp_path / f"{self.revision}-secret.json"
        data.write_text(json.dumps(by_kind["Secret"]["data"]))
        podman("secret", "create", self.secret, str(data))

    def mount_code(self, folder: Path) -> None:
        """Stand in for the code fetch (a VCS URL or data key the pod would fetch over
        the network, which this machine's pods may not reach): the folder, read-only, at
        the path EXECUTE_CODE names. The pod's own security settings stay as generated."""
        documents = list(yaml.safe_load_all(self.yaml.read_text()))
        pod = documents[-1]["spec"]["template"]["spec"]
        pod["volumes"].append({"name": "code", "hostPath": {"path": str(folder)}})
        pod["containers"][0]["volumeMounts"].append(
            {"name": "code", "mountPath": CODE_PATH, "readOnly": True}
        )
        self.yaml.write_text(yaml.safe_dump_all(documents))

    def play(self) -> str:
        podman("kube", "play", str(self.yaml))
        return f"http://127.0.0.1:{self.port}"

    def remove(self) -> None:
        podman("pod", "rm", "-f", self.pod, check=False)
        podman("secret", "rm", self.secret, check=False)

    def healthy(self) -> bool:
        return podman("healthcheck", "run", self.container, check=False).returncode == 0


def answer(url: str) -> httpx.Response:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            response = httpx.get(url, timeout=5.0)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in {DEADLINE:g} s")
        time.sleep(0.2)


def spec_of(name: str, health_path: str) -> ServiceSpec:
    return normalize(
        ServiceSpec(
            project="kubeplay",
            name=name,
            image=IMAGE,
            ports=[8080],
            connection_port=8080,
            pull_policy="never",
            health=HealthCheck(path=health_path, interval=2, timeout=2, retries=2),
        )
    )


@pytest.fixture
def played(tmp_path: Path) -> Iterator[list[Played]]:
    made: list[Played] = []
    yield made
    for instance in made:
        instance.remove()
    for claim in {instance.claim for instance in made}:
        podman("volume", "rm", "-f", claim, check=False)


def test_pod_serves_sees_secret_keeps_data_and_probes(
    podman_ready: None, tmp_path: Path, played: list[Played]
) -> None:
    name = f"svc-{secrets.token_hex(3)}"
    env = {"LAB_API_TOKEN": "tok-" + secrets.token_hex(8), "LAB_PROJECT": "kubeplay"}
    first = Played(tmp_path, spec_of(name, "/health"), env, new_claim=True)
    played.append(first)
    url = first.play()
    seen = answer(url + "/env-check").json()
    assert seen["LAB_PROJECT"] == "kubeplay"  # from the Secret, through envFrom
    assert seen["has_api_token"] is True
    assert seen["data_dir"] == "/data" and "LAB_DATA_DIR" in seen["lab_variables"]
    assert answer(url + "/visits").json()["visits"] == 1
    assert first.healthy()  # the readiness/liveness probe, as Podman's health check

    # The pod goes; the claim (a Podman volume) stays and the next pod finds the data.
    first.remove()
    second = Played(tmp_path, spec_of(name, "/no-such-page"), env, new_claim=False)
    played.append(second)
    url = second.play()
    assert answer(url + "/visits").json()["visits"] == 2
    assert not second.healthy()  # a probe of a path that answers 404 fails


def test_code_service_pod_runs_hardened(
    podman_ready: None, tmp_path: Path, played: list[Played]
) -> None:
    """A member's code in the runtime image, as the runtime generates its pod: not root,
    nothing writable but its /data, /tmp and HOME, and still serving."""
    spec = normalize(
        ServiceSpec(
            project="kubeplay",
            name=f"code-{secrets.token_hex(3)}",
            code="git+https://example.invalid/code.git",  # fetched: see mount_code
            ports=[8091],
            connection_port=8091,
            pull_policy="never",
        )
    )
    env = {"EXECUTE_CODE": CODE_PATH, "LAB_PROJECT": "kubeplay"}
    pod = Played(tmp_path, spec, env, new_claim=True, image=RUNTIME_IMAGE)
    played.append(pod)
    pod.mount_code(HOSTILE)
    url = pod.play()
    report = answer(url + "/attack").json()
    assert report["controls"] == {"own_data_written": True, "own_code_read": True, "uid": 10001}
    for attack in ("write_outside_data", "become_root"):
        assert report["attacks"][attack]["refused"] is True, report["attacks"][attack]
