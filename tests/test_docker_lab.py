"""The Docker runtime end to end: a real lab (`servicelab serve`) with SERVICELAB_RUNTIME=docker,
driven through its REST API and reached through its proxy on 127.0.0.1.

One lab serves the whole module; each test deploys services of its own into a project of
its own. Two images are used: the FastAPI example (`servicelab/example-fastapi:test`, from
`scripts/setup-docker.sh`) and a small standard-library server built here (`SERVER`),
whose HEALTHCHECK checks a file the test flips through the proxy, and which exits or eats
memory when asked. Every container, volume and network carries the module's own
`servicelab.instance` label and is removed at the end.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .dockertools import build_image, remove_everything_of
from .labtools import LabProcess, login, wait_until
from .test_execute import make_wheel

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
PYTHON_IMAGE = "servicelab/python:bookworm"
RUNTIME_IMAGE = "servicelab/runtime:test"
EXAMPLE_IMAGE = "servicelab/example-fastapi:test"
LAB_IMAGE = "servicelab/lab:test"
TEST_IMAGE = "servicelab-test/docker-lab-svc:test"
PODMAN_SOCKET = "unix:///run/podman/podman.sock"
TEST_LABEL = "org.servicelab.test"

LABEL_INSTANCE = "servicelab.instance"
LABEL_KEY = "servicelab.key"

#: A service driven by URLs and environment variables, so that one image shows every
#: behaviour: its version, /data, a health flag, exiting, eating memory.
SERVER = r"""
import json, os, signal, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default handler
if os.environ.get("EXIT_WITH"):
    print("exiting as asked", flush=True)
    sys.exit(int(os.environ["EXIT_WITH"]))
if os.environ.get("EAT_MEMORY_MB"):
    print("eating memory", flush=True)
    hog = [bytearray(2**20) for _ in range(int(os.environ["EAT_MEMORY_MB"]))]
    time.sleep(600)
if os.environ.get("SICK_AT_START"):
    open("/tmp/sick", "w").close()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = {"version": os.environ.get("VERSION", ""), "host": socket.gethostname()}
        if url.path == "/sick":
            open("/tmp/sick", "w").close()
        elif url.path == "/well":
            if os.path.exists("/tmp/sick"):
                os.unlink("/tmp/sick")
        elif url.path == "/data":
            path = os.path.join(os.environ["LAB_DATA_DIR"], "note.txt")
            if "write" in query:
                with open(path, "w") as f:
                    f.write(query["write"])
            body["note"] = open(path).read() if os.path.exists(path) else None
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

print("listening on 8080", flush=True)
ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

TEST_DOCKERFILE = f"""FROM {PYTHON_IMAGE}
COPY server.py /server.py
EXPOSE 8080
# The flag is read after the request: SICK_AT_START sets it before the server listens, so
# a check that gets an answer always sees it (read first, it could race the start).
HEALTHCHECK --interval=1s --timeout=3s --retries=2 \\
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/ && \\
        if [ -f /tmp/sick ]; then echo "sick flag set"; exit 1; fi
CMD ["python3", "-u", "/server.py"]
"""


# --- the engine, images and labs ---------------------------------------------------------


def _setup(script: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True, timeout=1500
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/{script} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def engine(docker_engine: Any) -> Any:
    """A Docker client for an engine with servicelab's images and this module's built."""
    files = {"Dockerfile": TEST_DOCKERFILE.encode(), "server.py": SERVER.encode()}
    build_image(docker_engine, TEST_IMAGE, files)
    return docker_engine


def containers_of(client: Any, instance_id: str, key: str | None = None) -> list[Any]:
    labels = [f"{LABEL_INSTANCE}={instance_id}"]
    if key:
        labels.append(f"{LABEL_KEY}={key}")
    return list(client.containers.list(all=True, filters={"label": labels}))


@dataclass
class Api:
    """The lab's REST API and proxy, as one admin sees them."""

    url: str
    token: str
    instance_id: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=120,
            trust_env=False,
        )

    def project(self) -> str:
        name = f"p{secrets.token_hex(3)}"
        response = self.http.post("/api/projects", json={"name": name})
        assert response.status_code == 201, response.text
        return name

    def deploy(self, project: str, name: str, image: str, env: dict[str, str] | None = None) -> Any:
        response = self.http.post(
            f"/api/projects/{project}/services",
            params={"image": image, "name": name},
            json=env or {},
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]

    def put(self, project: str, name: str, spec: dict[str, Any]) -> httpx.Response:
        return self.http.put(f"/api/projects/{project}/services/{name}", json=spec)

    def service(self, project: str, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/projects/{project}/services/{name}")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def wait_for(
        self,
        project: str,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 60,
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def poll() -> dict[str, Any] | None:
            nonlocal last
            last = self.service(project, name)
            return last if check(last) else None

        try:
            return wait_until(poll, timeout=timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast seen: {last}") from None

    def running(self, project: str, name: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(
            project,
            name,
            lambda s: s["status"] == "running" and s["isHealthy"],
            f"{project}/{name} to be running and healthy",
            timeout,
        )

    def route(self, project: str, name: str, port: int, path: str = "") -> str:
        return f"/api/projects/{project}/services/{name}/{port}/{path}"

    def via_proxy(self, project: str, name: str, port: int, path: str = "") -> httpx.Response:
        return self.http.get(self.route(project, name, port, path))

    def close(self) -> None:
        self.http.close()


@dataclass
class DockerLab:
    process: LabProcess
    api: Api
    instance_id: str


def start_docker_lab(
    data_dir: Path, instance_id: str, extra: dict[str, str] | None = None
) -> LabProcess:
    env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
        **(extra or {}),
    }
    return LabProcess(data_dir, env=env).start()


@pytest.fixture(scope="module")
def lab(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    instance_id = f"labtest-{secrets.token_hex(4)}"
    data_dir = tmp_path_factory.mktemp("docker-lab") / "data"
    data_dir.mkdir()
    process = start_docker_lab(data_dir, instance_id)
    api = Api(process.url, process.admin_token, instance_id)
    try:
        yield DockerLab(process, api, instance_id)
    finally:
        api.close()
        process.stop()
        remove_everything_of(engine, instance_id)


class Poller:
    """A client thread that GETs one URL through the proxy again and again, keeping every
    answer, to show what users see while the lab changes a service."""

    def __init__(self, api: Api, path: str) -> None:
        self.api = api
        self.path = path
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.api.token}"}
        with httpx.Client(base_url=self.api.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.path)
                    self.answers.append((response.status_code, response.text))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for_answers(self, count: int) -> None:
        start = len(self.answers)
        wait_until(lambda: len(self.answers) >= start + count, timeout=30, what="answers")

    def errors(self) -> list[tuple[int, str]]:
        return [(status, body[:300]) for status, body in self.answers if status != 200]


def exec_env(client: Any, container_id: str) -> dict[str, str]:
    """A running container's environment, read inside it."""
    container = client.containers.get(container_id)
    result = container.exec_run(["env"])
    assert result.exit_code == 0, result.output
    pairs = (line.partition("=") for line in result.output.decode().splitlines())
    return {key: value for key, _, value in pairs}


# --- the example image through the lab ---------------------------------------------------


def test_example_image_through_the_proxy(lab: DockerLab) -> None:
    api, project = lab.api, lab.api.project()
    deployed = api.deploy(project, "example", EXAMPLE_IMAGE, {"GREETING": "Hello from Docker"})
    assert deployed["runtime"] == "docker"
    assert deployed["connectionPort"] == 8080
    service = api.running(project, "example")
    assert service["dockerImage"] == EXAMPLE_IMAGE
    # ML Lab's clients find a service by its container's ID, whole or as `docker ps` shows it.
    container_id = service["dockerId"]
    assert re.fullmatch(r"[0-9a-f]{64}", container_id), container_id
    for ref in (container_id, container_id[:12], service["dockerName"]):
        found = api.http.get(f"/api/projects/{project}/services/{ref}")
        assert found.status_code == 200 and found.json()["data"]["name"] == "example"
    assert service["exposedPorts"] == [8080]

    index = api.via_proxy(project, "example", 8080)
    assert index.status_code == 200, index.text
    assert index.json()["greeting"] == "Hello from Docker"

    # /docs under the proxy's prefix, and the openapi.json it loads from there.
    prefix = api.route(project, "example", 8080)
    docs = api.via_proxy(project, "example", 8080, "docs")
    assert docs.status_code == 200
    assert f"{prefix}openapi.json" in docs.text
    openapi = api.http.get(f"{prefix}openapi.json")
    assert openapi.status_code == 200 and openapi.json()["info"]["title"]

    # Its log, through the API (uvicorn logs to stdout).
    logs = api.http.get(f"/api/projects/{project}/services/example/logs")
    assert logs.status_code == 200
    assert "Uvicorn running" in logs.json()["data"]


def test_lab_variables_inside_the_container(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    api.deploy(project, "envs", EXAMPLE_IMAGE)
    service = api.running(project, "envs")

    check = api.via_proxy(project, "envs", 8080, "env-check").json()
    assert check["LAB_PROJECT"] == project
    assert check["LAB_SERVICE_PATH"] == f"/api/projects/{project}/services/envs/"
    assert check["LAB_ENDPOINT"] == lab.process.url
    assert check["has_api_token"] is True
    assert check["data_dir"] == "/data"
    assert check["root_path"] == f"/api/projects/{project}/services/envs/8080"
    for name in ("LAB_API_TOKEN", "LAB_DATA_DIR", "LAB_ENDPOINT", "LAB_PROJECT"):
        assert name in check["lab_variables"]

    # The token itself, read inside the container: a token for this project only, and
    # never shown by the API.
    [container] = containers_of(engine, lab.instance_id, f"{project}--envs")
    token = exec_env(engine, container.id)["LAB_API_TOKEN"]
    assert service["configuration"]["LAB_API_TOKEN"] == "********"
    listing = api.http.get(f"/api/projects/{project}/services")
    assert token not in listing.text
    as_service = {"Authorization": f"Bearer {token}"}
    assert api.http.get(f"/api/projects/{project}", headers=as_service).status_code == 200
    other = api.project()
    assert api.http.get(f"/api/projects/{other}", headers=as_service).status_code in (403, 404)


def test_data_survives_restart_and_update(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    api.deploy(project, "keeper", EXAMPLE_IMAGE, {"GREETING": "v1"})
    api.running(project, "keeper")
    assert api.via_proxy(project, "keeper", 8080, "visits").json()["visits"] == 1
    assert api.via_proxy(project, "keeper", 8080, "visits").json()["visits"] == 2
    [first] = containers_of(engine, lab.instance_id, f"{project}--keeper")

    response = api.http.post(f"/api/projects/{project}/services/keeper/restart")
    assert response.status_code == 200, response.text
    api.running(project, "keeper")
    [second] = containers_of(engine, lab.instance_id, f"{project}--keeper")
    assert second.id != first.id  # a new container, on the same volume
    assert api.via_proxy(project, "keeper", 8080, "visits").json()["visits"] == 3

    response = api.put(project, "keeper", {"image": EXAMPLE_IMAGE, "env": {"GREETING": "v2"}})
    assert response.status_code == 200, response.text
    api.running(project, "keeper")
    assert api.via_proxy(project, "keeper", 8080).json()["greeting"] == "v2"
    assert api.via_proxy(project, "keeper", 8080, "visits").json()["visits"] == 4
    [third] = containers_of(engine, lab.instance_id, f"{project}--keeper")
    assert third.id not in (first.id, second.id)


# --- status from the engine --------------------------------------------------------------


def test_healthcheck_drives_status(lab: DockerLab) -> None:
    api, project = lab.api, lab.api.project()
    api.deploy(project, "flaky", TEST_IMAGE)
    api.running(project, "flaky")

    # The image's HEALTHCHECK fails while /tmp/sick exists; the proxy still reaches it.
    assert api.via_proxy(project, "flaky", 8080, "sick").status_code == 200
    sick = api.wait_for(
        project, "flaky", lambda s: s["status"] == "unhealthy", "flaky to be unhealthy"
    )
    assert sick["isHealthy"] is False
    assert "sick flag set" in (sick["reason"] or ""), sick["reason"]

    assert api.via_proxy(project, "flaky", 8080, "well").status_code == 200
    well = api.running(project, "flaky")
    assert well["reason"] is None


def test_exited_container_is_restarted_and_explained(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    api.deploy(project, "quitter", TEST_IMAGE, {"EXIT_WITH": "3"})
    service = api.wait_for(
        project,
        "quitter",
        lambda s: s["restarts"] >= 1 and "exited with code 3" in (s["reason"] or ""),
        "quitter to be restarted after exiting",
    )
    assert service["status"] in ("failed", "starting")
    assert not service["isHealthy"]
    # Each restart is a new container, with logs of its own: it says the same once it ran.
    wait_until(
        lambda: (
            "exiting as asked"
            in api.http.get(f"/api/projects/{project}/services/quitter/logs").json()["data"]
        ),
        timeout=60,
        what="the exit message in the logs",
    )
    # The failed container was replaced, not kept beside the new one.
    assert len(containers_of(engine, lab.instance_id, f"{project}--quitter")) == 1


def test_memory_limit_is_enforced_and_reported(lab: DockerLab) -> None:
    api, project = lab.api, lab.api.project()
    spec = {
        "image": TEST_IMAGE,
        "env": {"EAT_MEMORY_MB": "256"},
        "resources": {"memory": "48m"},
        "restart": "no",
    }
    response = api.put(project, "hog", spec)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["resources"]["memory"] == 48 * 2**20
    service = api.wait_for(project, "hog", lambda s: s["status"] == "failed", "hog to fail")
    assert "out of memory" in service["reason"], service["reason"]
    assert "48 MiB" in service["reason"], service["reason"]


# --- updates -------------------------------------------------------------------------------


def test_update_without_downtime(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    api.deploy(project, "smooth", EXAMPLE_IMAGE, {"GREETING": "old"})
    api.running(project, "smooth")
    key = f"{project}--smooth"
    [old] = containers_of(engine, lab.instance_id, key)
    old_token = exec_env(engine, old.id)["LAB_API_TOKEN"]
    with Poller(api, api.route(project, "smooth", 8080)) as poller:
        poller.wait_for_answers(5)
        response = api.put(project, "smooth", {"image": EXAMPLE_IMAGE, "env": {"GREETING": "new"}})
        assert response.status_code == 200, response.text
        poller.wait_for_answers(5)
    assert poller.errors() == []
    greetings = [body for _, body in poller.answers]
    assert '"greeting":"old"' in greetings[0]
    assert '"greeting":"new"' in greetings[-1]
    # Once switched, never back to the old version.
    first_new = next(i for i, body in enumerate(greetings) if '"new"' in body)
    assert all('"new"' in body for body in greetings[first_new:])
    assert api.service(project, "smooth")["configuration"]["GREETING"] == "new"
    # The new version has a token of its own; the old one's is revoked with it.
    [new] = containers_of(engine, lab.instance_id, key)
    assert new.id != old.id
    new_token = exec_env(engine, new.id)["LAB_API_TOKEN"]
    for token, status in ((new_token, 200), (old_token, 401)):
        response = api.http.get(
            f"/api/projects/{project}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == status, response.text


def test_failed_update_keeps_the_old_version(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    base = {"image": TEST_IMAGE, "health": {"startPeriod": 4}}
    response = api.put(project, "steady", {**base, "env": {"VERSION": "1"}})
    assert response.status_code == 201, response.text
    api.running(project, "steady")
    key = f"{project}--steady"
    [old] = containers_of(engine, lab.instance_id, key)
    old_token = exec_env(engine, old.id)["LAB_API_TOKEN"]

    broken = [
        # never healthy: its HEALTHCHECK fails from the start
        ({"VERSION": "2", "SICK_AT_START": "1"}, "not healthy after 4 s"),
        # exits at once
        ({"VERSION": "2", "EXIT_WITH": "3"}, "exited with code 3"),
    ]
    for env, why in broken:
        with Poller(api, api.route(project, "steady", 8080)) as poller:
            poller.wait_for_answers(3)
            response = api.put(project, "steady", {**base, "env": env})
            poller.wait_for_answers(3)
        assert response.status_code == 422, response.text
        message = response.json()["errors"]["message"]
        assert "previous version keeps serving" in message and why in message, message
        assert poller.errors() == []
        assert all('"version": "1"' in body for _, body in poller.answers)

        service = api.service(project, "steady")
        assert service["status"] == "running" and service["isHealthy"]
        assert service["configuration"]["VERSION"] == "1"
        assert why in service["reason"]
        # The new container is gone; the old one still runs, with a token that still works.
        assert [c.id for c in containers_of(engine, lab.instance_id, key)] == [old.id]
        as_old = {"Authorization": f"Bearer {old_token}"}
        assert api.http.get(f"/api/projects/{project}", headers=as_old).status_code == 200


# --- the lab's own life ---------------------------------------------------------------------


def test_killed_lab_adopts_its_containers(engine: Any, tmp_path: Path) -> None:
    instance_id = f"labtest-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process = start_docker_lab(data_dir, instance_id)
    api = Api(process.url, process.admin_token, instance_id)
    try:
        project = api.project()
        for name in ("one", "two"):
            api.deploy(project, name, TEST_IMAGE, {"VERSION": name})
        before = {name: api.running(project, name) for name in ("one", "two")}
        hosts = {n: api.via_proxy(project, n, 8080).json()["host"] for n in ("one", "two")}
        ids = {c.id for c in containers_of(engine, instance_id)}
        assert len(ids) == 2

        process.stop(signal.SIGKILL)
        api.close()
        process = start_docker_lab(data_dir, instance_id)
        api = Api(process.url, process.admin_token, instance_id)

        for name in ("one", "two"):
            after = api.running(project, name)
            assert after["restarts"] == 0
            assert after["startedAt"] == before[name]["startedAt"]
            answer = api.via_proxy(project, name, 8080)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"version": name, "host": hosts[name]}
        # The same two containers, no duplicates started beside them.
        assert {c.id for c in containers_of(engine, instance_id)} == ids
        for name in ("one", "two"):
            assert len(containers_of(engine, instance_id, f"{project}--{name}")) == 1
    finally:
        api.close()
        process.stop()
        remove_everything_of(engine, instance_id)


def test_code_service_from_a_local_folder(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    folder = ROOT / "examples" / "code-service"
    response = api.http.post(
        f"/api/projects/{project}/services",
        params={"name": "coder"},
        json={"EXECUTE_CODE": str(folder), "GREETING": "hi from a folder"},
    )
    assert response.status_code == 201, response.text
    service = api.running(project, "coder")
    assert service["connectionPort"] == 8091
    assert service["dockerImage"] == RUNTIME_IMAGE

    index = api.via_proxy(project, "coder", 8091)
    assert index.status_code == 200, index.text
    assert index.json()["greeting"] == "hi from a folder"
    assert api.via_proxy(project, "coder", 8091, "visits").json() == {"visits": 1}

    [container] = containers_of(engine, lab.instance_id, f"{project}--coder")
    assert container.image.tags and RUNTIME_IMAGE in container.image.tags
    # Copied in, not bind-mounted: no folder of the host is in the container (issue 12);
    # the code and HOME are anonymous volumes of the container, /data its named one.
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert set(mounts) == {"/data", "/workspace/code", "/workspace/home"}
    assert {m["Type"] for m in mounts.values()} == {"volume"}
    copied = container.exec_run(["cat", "/workspace/code/__main__.py"])
    assert copied.output.decode() == (folder / "__main__.py").read_text()
    assert exec_env(engine, container.id)["EXECUTE_CODE"] == "/workspace/code"
    # Hardened: the service's user, not root; it cannot change its code or the system.
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    for place in ("/workspace/code/__main__.py", "/opt/venv/bin/python", "/etc/passwd"):
        attempt = container.exec_run(["sh", "-c", f"echo x >> {place}"])
        assert attempt.exit_code != 0, place
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"

    # Deleting the service removes its container's anonymous volumes; its data stays.
    anonymous = {m["Name"] for d, m in mounts.items() if d != "/data"}
    assert api.http.delete(f"/api/projects/{project}/services/coder").status_code == 200
    wait_until(
        lambda: not containers_of(engine, lab.instance_id, f"{project}--coder"),
        timeout=60,
        what="the container removed",
    )
    names = {v.name for v in engine.volumes.list()}
    assert not anonymous & names and mounts["/data"]["Name"] in names

    # A folder that is not there is a 400 that says so, not a crash loop.
    missing = api.http.post(
        f"/api/projects/{project}/services",
        params={"name": "nowhere"},
        json={"EXECUTE_CODE": str(folder / "no-such-folder")},
    )
    assert missing.status_code == 400, missing.text
    assert "does not exist" in missing.json()["errors"]["message"]


PROBE_COUNTER = str(ROOT / "tests" / "services" / "probe-counter")
#: The User-Agent of health probes, the lab's and the runtime image's.
PROBE_AGENT = "servicelab-health-probe"

#: A code service that burns CPU for a second on /burn, for the usage charts.
BUSY_SERVICE = """
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/burn":
            end = time.monotonic() + 1
            while time.monotonic() < end:
                sum(range(1000))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def deploy_code(api: Api, project: str, name: str, code: str, **env: str) -> None:
    response = api.http.post(
        f"/api/projects/{project}/services",
        params={"name": name},
        json={"EXECUTE_CODE": code, **env},
    )
    assert response.status_code == 201, response.text


def test_code_service_requirements_install_as_the_service_user(
    lab: DockerLab, tmp_path: Path
) -> None:
    """requirements.txt and setup.sh still work in the hardened container: as its user,
    into a virtual environment of its own in its HOME."""
    code = tmp_path / "deps"
    make_wheel(code)
    (code / "requirements.txt").write_text("--no-index\n--find-links /workspace/code\ntinypkg\n")
    (code / "setup.sh").write_text('echo "setup.sh ran as uid $(id -u)"\n')
    (code / "__main__.py").write_text(
        "import json, os, sys, tinypkg\n"
        "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'tinypkg': tinypkg.VERSION, 'prefix': sys.prefix,\n"
        "                           'uid': os.getuid()}).encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n"
    )
    api, project = lab.api, lab.api.project()
    deploy_code(api, project, "deps", str(code))
    api.running(project, "deps", timeout=120)
    answer = api.via_proxy(project, "deps", 8091).json()
    assert answer == {"tinypkg": "1.0", "prefix": "/workspace/home/venv", "uid": 10001}
    logs = api.http.get(f"/api/projects/{project}/services/deps/logs").text
    assert "setup.sh ran as uid 10001" in logs


def test_code_service_answering_404_on_its_root_is_unhealthy(lab: DockerLab) -> None:
    """The runtime image's HEALTHCHECK has the lab's rule: below 400 on the app's path."""
    api, project = lab.api, lab.api.project()
    response = api.put(
        project,
        "broken",
        {"code": PROBE_COUNTER, "env": {"ROOT_STATUS": "404"}, "health": {"startPeriod": 1}},
    )
    assert response.status_code in (200, 201), response.text
    broken = api.wait_for(
        project, "broken", lambda s: s["status"] == "unhealthy", "broken unhealthy", 90
    )
    assert broken["isHealthy"] is False
    assert "answered 404" in broken["reason"], broken["reason"]

    # With the prefix kept, the check asks the prefixed path, as the lab's probe does.
    deploy_code(api, project, "prefixed", PROBE_COUNTER, LAB_KEEP_PREFIX="true", UNDER_PREFIX="1")
    api.running(project, "prefixed")
    assert api.via_proxy(project, "prefixed", 8091).text == "root"

    # Probes do not bury the app's log: after a passing HTTP check, checks are TCP
    # connects (which the app does not log) for the next 30 s.
    def counted() -> dict[str, Any]:
        return dict(api.via_proxy(project, "prefixed", 8091, "stats").json())

    def tcp_checks(stats: dict[str, Any]) -> int:
        return int(stats["connections"]) - sum(stats["requests"].values())

    stats = wait_until(
        lambda: found if tcp_checks(found := counted()) >= 3 else None,
        timeout=90,
        interval=1.0,
        what="3 TCP health checks",
    )
    http_probes = stats["requests"].get(PROBE_AGENT, 0)
    assert 1 <= http_probes <= 2, stats
    logs = api.http.get(f"/api/projects/{project}/services/prefixed/logs").text
    assert logs.count(PROBE_AGENT) == http_probes


def test_a_busy_service_shows_cpu_and_memory(lab: DockerLab, tmp_path: Path) -> None:
    """The service page's charts: CPU and memory from the engine's stats."""
    code = tmp_path / "busy"
    code.mkdir()
    (code / "__main__.py").write_text(BUSY_SERVICE)
    api, project = lab.api, lab.api.project()
    deploy_code(api, project, "busy", str(code))
    api.running(project, "busy")

    def busy_usage() -> dict[str, Any] | None:
        assert api.via_proxy(project, "busy", 8091, "burn").text == "ok"
        response = api.http.get(f"/api/projects/{project}/services/busy/metrics")
        assert response.status_code == 200, response.text
        usage = response.json()["data"]["usage"]
        busy = [p for p in usage["cpuPercent"] if p is not None and p > 0]
        return usage if busy and all(m > 0 for m in usage["memoryBytes"]) else None

    usage = wait_until(busy_usage, timeout=60, interval=0.5, what="CPU and memory samples")
    assert max(usage["memoryBytes"]) < 1024**3  # resident memory, not the limit


def wait_for_lab_container(container: Any, timeout: float = 90) -> str:
    """The URL of a lab running in `container` once it answers /healthz; fails at once,
    with the lab's log, if the container exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            pytest.fail(f"the lab's container exited:\n{container.logs().decode(errors='replace')}")
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp")
        if bindings:
            url = f"http://127.0.0.1:{bindings[0]['HostPort']}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    return url
            except httpx.TransportError as exc:
                last = exc
        time.sleep(0.2)
    logs = container.logs().decode(errors="replace")[-3000:]
    pytest.fail(f"the lab in its container never answered /healthz ({last!r}):\n{logs}")


@pytest.mark.slow
def test_lab_in_a_container_deploys_beside_itself(engine: Any) -> None:
    """The root Dockerfile's lab on the engine whose socket it is given, reaching its
    services by name on their project network."""
    try:
        engine.images.build(
            path=str(ROOT),
            tag=LAB_IMAGE,
            buildargs={"BASE_IMAGE": PYTHON_IMAGE},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as error:
        output = "".join(str(chunk.get("stream", chunk)) for chunk in error.build_log)
        pytest.fail(f"building the lab image failed:\n{output[-5000:]}")
    instance_id = f"labtest-{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(8)}"
    container = engine.containers.run(
        LAB_IMAGE,
        detach=True,
        environment={
            "SERVICELAB_ADMIN_PASSWORD": password,
            "SERVICELAB_INSTANCE_ID": instance_id,
            "SERVICELAB_RUNTIME": "docker",
            "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
            "SERVICELAB_RECONCILE_INTERVAL": "0.5",
        },
        ports={"8080/tcp": ("127.0.0.1", None)},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        labels={TEST_LABEL: "test_docker_lab"},
    )
    api: Api | None = None
    try:
        url = wait_for_lab_container(container)
        api = Api(url, login(url, "admin", password), instance_id)
        project = api.project()
        api.deploy(project, "beside", EXAMPLE_IMAGE, {"GREETING": "from beside the lab"})
        api.running(project, "beside")
        answer = api.via_proxy(project, "beside", 8080)
        assert answer.status_code == 200, answer.text
        assert answer.json()["greeting"] == "from beside the lab"
        # Not published on the host: the lab reaches it on the project network only.
        [service] = containers_of(engine, instance_id, f"{project}--beside")
        assert not any((service.attrs["NetworkSettings"]["Ports"] or {}).values())
        assert password not in container.logs().decode(errors="replace")
    finally:
        if api is not None:
            api.close()
        container.remove(force=True, v=True)
        remove_everything_of(engine, instance_id)


# --- Podman ------------------------------------------------------------------------------------


@pytest.mark.podman
def test_podman_deploy_logs_delete(engine: Any, tmp_path: Path) -> None:
    _setup("setup-podman.sh")
    podman = docker.DockerClient(base_url=PODMAN_SOCKET, timeout=120)
    instance_id = f"labtest-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process = start_docker_lab(data_dir, instance_id, {"DOCKER_HOST": PODMAN_SOCKET})
    api = Api(process.url, process.admin_token, instance_id)
    try:
        project = api.project()
        api.deploy(project, "pod", EXAMPLE_IMAGE, {"GREETING": "Hi from Podman"})
        # Podman runs no HEALTHCHECK here: the runtime runs the image's own.
        api.running(project, "pod", timeout=90)
        answer = api.via_proxy(project, "pod", 8080)
        assert answer.status_code == 200, answer.text
        assert answer.json()["greeting"] == "Hi from Podman"
        assert api.via_proxy(project, "pod", 8080, "visits").json()["visits"] == 1
        assert len(containers_of(podman, instance_id, f"{project}--pod")) == 1

        def logged() -> bool:
            logs = api.http.get(f"/api/projects/{project}/services/pod/logs", params={"tail": 50})
            return "visit 1" in logs.json()["data"]

        wait_until(logged, timeout=10, what="the visit in the service's log")
        response = api.http.delete(f"/api/projects/{project}/services/pod")
        assert response.status_code == 200, response.text
        assert containers_of(podman, instance_id) == []
        assert api.http.get(f"/api/projects/{project}/services/pod").status_code == 404

        # A code service runs hardened on Podman too (host code copied into a volume of a
        # read-only container), and its page gets its memory from Podman's stats.
        folder = str(ROOT / "examples" / "code-service")
        deploy_code(api, project, "coder", folder, GREETING="hardened")
        api.running(project, "coder", timeout=90)
        answer = api.via_proxy(project, "coder", 8091)
        assert answer.json().get("greeting") == "hardened", (answer.status_code, answer.text)
        [container] = containers_of(podman, instance_id, f"{project}--coder")
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        metrics = api.http.get(f"/api/projects/{project}/services/coder/metrics").json()
        assert metrics["data"]["usage"]["memoryBytes"][-1] > 0
    finally:
        api.close()
        process.stop()
        remove_everything_of(podman, instance_id)
        podman.close()


# --- reliability: one bad service, a lab killed during updates ------------------------------


def test_a_service_that_cannot_start_never_stalls_the_others(lab: DockerLab, engine: Any) -> None:
    api, project = lab.api, lab.api.project()
    # An image tag of its own, removed once the service runs: its next start is refused.
    doomed_image = f"servicelab-test/doomed:{secrets.token_hex(3)}"
    engine.images.get(TEST_IMAGE).tag(doomed_image)
    try:
        spec = {"image": doomed_image, "pullPolicy": "never", "env": {"VERSION": "doomed"}}
        response = api.put(project, "doomed", spec)
        assert response.status_code == 201, response.text
        api.deploy(project, "other", TEST_IMAGE, {"VERSION": "other"})
        for name in ("doomed", "other"):
            api.running(project, name)
    finally:
        engine.images.remove(doomed_image)
    [doomed] = containers_of(engine, lab.instance_id, f"{project}--doomed")
    doomed.kill()
    api.wait_for(
        project,
        "doomed",
        lambda s: s["status"] == "failed" and s["restarts"] >= 2,
        "doomed to have failed to start",
    )
    [before] = containers_of(engine, lab.instance_id, f"{project}--other")
    before.kill()
    api.wait_for(
        project,
        "other",
        lambda s: s["status"] == "running" and s["isHealthy"] and s["restarts"] >= 1,
        "the other service to be restarted",
        timeout=60,
    )
    assert api.via_proxy(project, "other", 8080).json()["version"] == "other"
    doomed_now = api.service(project, "doomed")
    assert doomed_now["status"] == "failed"
    assert "not found" in doomed_now["reason"], doomed_now["reason"]
    for name in ("doomed", "other"):
        response = api.http.delete(
            f"/api/projects/{project}/services/{name}", params={"purge": True}
        )
        assert response.status_code == 200, response.text


@pytest.mark.timeout(600)  # ten lab restarts
def test_a_lab_killed_during_updates_keeps_one_consistent_instance(
    engine: Any, tmp_path: Path
) -> None:
    instance_id = f"labtest-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process = start_docker_lab(data_dir, instance_id)
    api = Api(process.url, process.admin_token, instance_id)
    key_of = "flip"
    try:
        project = api.project()
        base = {"image": TEST_IMAGE, "health": {"startPeriod": 20}}
        response = api.put(project, key_of, {**base, "env": {"VERSION": "0"}})
        assert response.status_code == 201, response.text
        api.running(project, key_of)
        key = f"{project}--{key_of}"
        # Kill points spread over an update: before the new container is created, while it
        # starts, while it gets healthy, around the switch, after it.
        delays = [0.05, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 3.0]
        for version, delay in enumerate(delays, start=1):
            spec = {**base, "env": {"VERSION": str(version)}}
            url = f"{process.url}/api/projects/{project}/services/{key_of}"

            def put(
                url: str = url, spec: dict[str, Any] = spec, auth: Any = api.http.headers
            ) -> None:
                with contextlib.suppress(httpx.HTTPError):  # the lab dies under it
                    httpx.put(url, json=spec, headers=auth, timeout=60)

            thread = threading.Thread(target=put, daemon=True)
            thread.start()
            time.sleep(delay)  # the kill point, not a wait for readiness
            process.stop(signal.SIGKILL)
            thread.join(timeout=60)
            api.close()
            process = start_docker_lab(data_dir, instance_id)
            api = Api(process.url, process.admin_token, instance_id)
            stored = api.running(project, key_of)

            def only_one(key: str = key) -> bool:
                found = containers_of(engine, instance_id, key)
                return len(found) == 1 and found[0].status == "running"

            wait_until(only_one, timeout=30, what=f"one container after kill {version} ({delay} s)")
            served = api.via_proxy(project, key_of, 8080).json()["version"]
            assert served == stored["configuration"]["VERSION"], (
                f"kill {version} after {delay} s: serving {served}, "
                f"the database holds {stored['configuration']['VERSION']}"
            )
        response = api.http.delete(
            f"/api/projects/{project}/services/{key_of}", params={"purge": True}
        )
        assert response.status_code == 200, response.text
        assert containers_of(engine, instance_id, key) == []
        volumes = engine.volumes.list(filters={"label": f"{LABEL_KEY}={key}"})
        assert volumes == []
    finally:
        api.close()
        process.stop()
        remove_everything_of(engine, instance_id)


def test_specs_the_engine_can_never_run_are_refused_at_deploy(lab: DockerLab) -> None:
    api, project = lab.api, lab.api.project()
    for spec, hint in (
        ({"image": TEST_IMAGE, "resources": {"cpus": 512}}, "CPUs"),
        ({"image": TEST_IMAGE, "env": {"A": "x\u0000y"}}, "NUL"),
        ({"image": TEST_IMAGE, "env": {"A=B": "x"}}, "A=B"),
    ):
        response = api.put(project, "greedy", spec)
        assert response.status_code == 400, response.text
        assert hint in response.json()["errors"]["message"]
    assert api.http.get(f"/api/projects/{project}/services").json()["data"] == []
