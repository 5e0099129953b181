"""Image pulls through a real lab with the Docker runtime, from a real registry on 127.0.0.1.

The registry (`tests/registry.py`) re-serves the FastAPI example as `demo/example`, each
tag a variant with a small layer of its own, so that the engine has to pull it. The
download of that layer can be held half-way: the deploy request is then still running
while the test reads the service, which shows the pull's progress as its reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .dockertools import remove_everything_of
from .labtools import ADMIN_PASSWORD, ROOT, LabProcess, wait_until
from .registry import ExportedImage, Registry, Served, export_image

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

EXAMPLE_IMAGE = "servicelab/example-fastapi:test"
RUNTIME_IMAGE = "servicelab/runtime:test"
REPOSITORY = "demo/example"
LABEL_INSTANCE = "servicelab.instance"
LABEL_KEY = "servicelab.key"
#: The first run on an engine downloads the example's layers too (a few hundred MB).
PULL_TIMEOUT = 180


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(docker_engine: Any) -> Any:
    return docker_engine


@dataclass
class Images:
    """The registry and what it serves; the variants are removed from the engine at the end."""

    engine: Any
    registry: Registry
    example: ExportedImage
    served: list[Served] = field(default_factory=list)

    def serve(self, tag: str, *, absent: bool = True) -> Served:
        """Serve a new variant of the example as `demo/example:<tag>`. With `absent`, the
        engine is made to lack that reference first (it would not pull it otherwise)."""
        served = self.registry.serve(REPOSITORY, [tag], self.example)
        self.served.append(served)
        if absent:
            reference = self.reference(tag)
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.engine.images.remove(reference, force=True)
            with pytest.raises(docker.errors.ImageNotFound):
                self.engine.images.get(reference)
        return served

    def reference(self, tag: str, repository: str = REPOSITORY) -> str:
        return self.registry.reference(repository, tag)

    def remove_all(self) -> None:
        for served in self.served:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.engine.images.remove(served.image_id, force=True)


@pytest.fixture(scope="module")
def images(engine: Any) -> Iterator[Images]:
    example = export_image(engine, EXAMPLE_IMAGE, ROOT / ".cache" / "registry")
    with Registry() as registry:
        served = Images(engine, registry, example)
        try:
            yield served
        finally:
            served.remove_all()


@dataclass
class Lab:
    process: LabProcess
    instance_id: str
    http: httpx.Client

    def project(self) -> str:
        name = f"p{secrets.token_hex(3)}"
        response = self.http.post("/api/projects", json={"name": name})
        assert response.status_code == 201, response.text
        return name

    def service(self, project: str, name: str) -> httpx.Response:
        return self.http.get(f"/api/projects/{project}/services/{name}")

    def put(self, project: str, name: str, spec: dict[str, Any]) -> httpx.Response:
        return self.http.put(f"/api/projects/{project}/services/{name}", json=spec)

    def running(self, project: str, name: str) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def healthy() -> bool:
            nonlocal last
            last = self.service(project, name).json()["data"]
            return last["status"] == "running" and last["isHealthy"]

        try:
            wait_until(healthy, timeout=60, interval=0.1, what=f"{name} to run")
        except AssertionError as exc:
            log = self.process.log()
            raise AssertionError(f"{exc}\nlast seen: {last}\nlab log: {log}") from None
        return last

    def delete(self, project: str, *names: str) -> None:
        for name in names:
            self.http.delete(f"/api/projects/{project}/services/{name}", params={"purge": True})

    def image_of(self, engine: Any, project: str, name: str) -> str:
        """The image id of the service's container."""
        labels = [f"{LABEL_INSTANCE}={self.instance_id}", f"{LABEL_KEY}={project}--{name}"]
        containers = engine.containers.list(all=True, filters={"label": labels})
        assert len(containers) == 1, containers
        return str(containers[0].attrs["Image"])


@pytest.fixture(scope="module")
def lab(engine: Any, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    instance_id = f"pulltest-{secrets.token_hex(4)}"
    data_dir = tmp_path_factory.mktemp("pull-lab") / "data"
    data_dir.mkdir()
    env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
    }
    process = LabProcess(data_dir, env=env).start()
    headers = {"Authorization": f"Bearer {process.admin_token}"}
    # The deploy that pulls waits for the pull: the timeout covers a first, full one.
    http = httpx.Client(base_url=process.url, headers=headers, timeout=300, trust_env=False)
    try:
        yield Lab(process, instance_id, http)
    finally:
        http.close()
        process.stop()
        remove_everything_of(engine, instance_id)


def mentions_pull(reason: str | None) -> bool:
    text = (reason or "").lower()
    return "pull" in text or "download" in text


# --- tests -----------------------------------------------------------------------------------


def test_pull_progress_shows_in_the_service_while_it_deploys(lab: Lab, images: Images) -> None:
    served = images.serve("1")
    reference = images.reference("1")
    hold = images.registry.hold(served.marker.blob.digest)
    project = lab.project()
    answer: list[httpx.Response] = []

    def deploy() -> None:
        answer.append(
            lab.http.post(
                f"/api/projects/{project}/services",
                params={"image": reference, "name": "pulled"},
                json={"GREETING": "Hello from the registry"},
            )
        )

    seen: list[tuple[str, str | None]] = []
    deploying = threading.Thread(target=deploy, daemon=True)
    deploying.start()
    try:

        def pull_shown() -> bool:
            response = lab.service(project, "pulled")
            if response.status_code != 200:
                return False
            data = response.json()["data"]
            seen.append((data["status"], data["reason"]))
            return mentions_pull(data["reason"])

        wait_until(pull_shown, timeout=PULL_TIMEOUT, interval=0.1, what="a reason about the pull")
        # The layer is held, so the deploy request cannot have answered yet.
        still_deploying = not answer
    finally:
        hold.release()
        deploying.join(timeout=PULL_TIMEOUT)
    try:
        assert still_deploying, answer
        assert hold.reached.is_set()
        assert {status for status, _ in seen} == {"starting"}, seen
        assert answer and answer[0].status_code == 201, answer and answer[0].text

        service = lab.running(project, "pulled")
        assert service["reason"] is None  # the progress does not outlive the pull
        assert service["dockerImage"] == reference
        assert lab.image_of(images.engine, project, "pulled") == served.image_id
        index = lab.http.get(f"/api/projects/{project}/services/pulled/8080/")
        assert index.status_code == 200, index.text
        assert index.json()["greeting"] == "Hello from the registry"
    finally:
        lab.delete(project, "pulled")


def test_an_update_shows_its_pull_while_the_old_version_serves(lab: Lab, images: Images) -> None:
    project = lab.project()
    created = lab.put(project, "moving", {"image": EXAMPLE_IMAGE, "env": {"GREETING": "old"}})
    assert created.status_code == 201, created.text
    lab.running(project, "moving")
    served = images.serve("4")
    hold = images.registry.hold(served.marker.blob.digest)
    spec = {"image": images.reference("4"), "env": {"GREETING": "new"}}
    answer: list[httpx.Response] = []
    updating = threading.Thread(target=lambda: answer.append(lab.put(project, "moving", spec)))
    updating.start()
    seen: list[tuple[str, str | None]] = []
    try:

        def pull_shown() -> bool:
            data = lab.service(project, "moving").json()["data"]
            seen.append((data["status"], data["reason"]))
            return (data["reason"] or "").startswith("updating: ") and mentions_pull(data["reason"])

        wait_until(pull_shown, timeout=PULL_TIMEOUT, interval=0.1, what="the update's pull")
        index = lab.http.get(f"/api/projects/{project}/services/moving/8080/")
        assert index.status_code == 200 and index.json()["greeting"] == "old", index.text
    finally:
        hold.release()
        updating.join(timeout=PULL_TIMEOUT)
    try:
        assert {status for status, _ in seen} == {"running"}, seen
        assert answer and answer[0].status_code == 200, answer and answer[0].text
        service = lab.running(project, "moving")
        assert service["reason"] is None
        assert lab.image_of(images.engine, project, "moving") == served.image_id
        index = lab.http.get(f"/api/projects/{project}/services/moving/8080/")
        assert index.json()["greeting"] == "new", index.text
    finally:
        lab.delete(project, "moving")


def test_pull_policy_always_pulls_again(lab: Lab, images: Images) -> None:
    first = images.serve("3")
    reference = images.reference("3")
    images.engine.images.pull(reference.rsplit(":", 1)[0], tag="3")  # the first variant
    second = images.serve("3", absent=False)  # the registry's tag 3 moves on
    project = lab.project()
    asked = images.registry.requested("HEAD", "/manifests/3")
    try:
        cached = lab.put(project, "cached", {"image": reference})
        assert cached.status_code == 201, cached.text
        assert images.registry.requested("HEAD", "/manifests/3") == asked  # no pull at all
        assert lab.image_of(images.engine, project, "cached") == first.image_id

        fresh = lab.put(project, "fresh", {"image": reference, "pullPolicy": "always"})
        assert fresh.status_code == 201, fresh.text
        assert images.registry.requested("HEAD", "/manifests/3") > asked
        assert lab.image_of(images.engine, project, "fresh") == second.image_id
        lab.running(project, "fresh")
    finally:
        lab.delete(project, "cached", "fresh")


def test_pull_policy_never_with_a_missing_image_says_why(lab: Lab, images: Images) -> None:
    reference = images.reference("never")
    project = lab.project()
    response = lab.put(project, "never", {"image": reference, "pullPolicy": "never"})
    assert response.status_code == 400, response.text
    message = response.json()["errors"]["message"]
    assert reference in message and "'never'" in message, message
    assert images.registry.requested("HEAD", "/manifests/never") == 0
    left = lab.service(project, "never")
    assert left.status_code == 404, left.text  # nothing half-made is left


@pytest.mark.parametrize(
    ("repository", "tag"), [("demo/absent", "1"), (REPOSITORY, "absent")], ids=["name", "tag"]
)
def test_an_image_missing_from_the_registry_is_a_clear_4xx(
    lab: Lab, images: Images, repository: str, tag: str
) -> None:
    images.registry.serve(REPOSITORY, ["1"], images.example)  # the repository exists
    reference = images.reference(tag, repository)
    project = lab.project()
    response = lab.http.post(
        f"/api/projects/{project}/services", params={"image": reference, "name": "absent"}
    )
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["errors"]["message"]
    assert reference in message and "not found" in message, message
    assert "Traceback" not in response.text
    left = lab.service(project, "absent")
    assert left.status_code == 404, left.text
    # The name is free again: a second try fails for its own reason, not as a duplicate.
    again = lab.put(project, "absent", {"image": reference, "pullPolicy": "never"})
    assert again.status_code == 400 and "'never'" in again.text, again.text


def test_cli_deploy_pulls_and_waits_until_healthy(lab: Lab, images: Images, tmp_path: Path) -> None:
    served = images.serve("2")
    reference = images.reference("2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update({"SERVICELAB_CONFIG": str(tmp_path / "config.json"), "COLUMNS": "200"})

    def servicelab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servicelab", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=PULL_TIMEOUT + 60,
        )

    login = servicelab("login", lab.process.url, "-u", "admin", stdin=ADMIN_PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    project = f"p{secrets.token_hex(3)}"
    assert servicelab("projects", "create", project, "--use").returncode == 0
    try:
        deployed = servicelab(
            "services", "deploy", "--image", reference, "--name", "cli-pulled", "--timeout", "120"
        )
        assert deployed.returncode == 0, (deployed.stdout, deployed.stderr)
        assert "cli-pulled is running" in deployed.stdout + deployed.stderr
        assert "Traceback" not in deployed.stderr
        # It was really pulled: the variant's own layer was downloaded.
        assert images.registry.requested("GET", served.marker.blob.digest) >= 1
        assert lab.image_of(images.engine, project, "cli-pulled") == served.image_id
    finally:
        lab.delete(project, "cli-pulled")
