"""The images servicelab ships, run on a real Docker engine.

`scripts/setup-docker.sh` (run once per session) starts the engine if needed and builds
`servicelab/runtime:test` and `servicelab/example-fastapi:test` from this checkout. Every
port is published on 127.0.0.1 only, with a port the engine picks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import subprocess
import textwrap
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_IMAGE = "servicelab/runtime:test"
EXAMPLE_IMAGE = "servicelab/example-fastapi:test"
TEST_LABEL = "org.servicelab.test"


@pytest.fixture(scope="session")
def docker_client(docker_engine: Any) -> Any:
    return docker_engine


@pytest.fixture
def run_container(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Start containers labelled as this test's, and remove them (and their volumes) after."""
    started: list[Any] = []

    def run(image: str, **kwargs: Any) -> Any:
        kwargs.setdefault("labels", {})[TEST_LABEL] = "test_images"
        container = docker_client.containers.run(image, detach=True, **kwargs)
        started.append(container)
        return container

    yield run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def host_port(container: Any, port: int, deadline: float = 30) -> int:
    """The 127.0.0.1 port the engine published for a container port."""
    end = time.monotonic() + deadline
    while True:
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        if container.status == "exited" or time.monotonic() > end:
            raise AssertionError(f"port {port} never published; logs:\n{logs(container)}")
        time.sleep(0.1)


def logs(container: Any) -> str:
    return str(container.logs().decode(errors="replace"))


def wait_for_http(container: Any, url: str, deadline: float = 120) -> httpx.Response:
    """Poll until the URL answers 200; fail with the container's logs if it never does."""
    end = time.monotonic() + deadline
    last: object = None
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < end:
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return response
                last = response.status_code
            except httpx.TransportError as error:
                last = error
            container.reload()
            if container.status == "exited":
                break
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200 (last: {last!r}); logs:\n{logs(container)}")


def wait_for_health(container: Any, deadline: float = 120) -> str:
    end = time.monotonic() + deadline
    status = "none"
    while time.monotonic() < end:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status in ("healthy", "unhealthy") or container.status == "exited":
            break
        time.sleep(0.5)
    return status


def publish(port: int) -> dict[str, tuple[str, None]]:
    return {f"{port}/tcp": ("127.0.0.1", None)}


# --- the runtime image ----------------------------------------------------------------------


def test_runtime_runs_a_mounted_code_folder(run_container: Callable[..., Any]) -> None:
    container = run_container(
        RUNTIME_IMAGE,
        environment={"EXECUTE_CODE": "/workspace/code-service", "GREETING": "hi there"},
        volumes={
            str(ROOT / "examples" / "code-service"): {
                "bind": "/workspace/code-service",
                "mode": "ro",
            }
        },
        ports=publish(8091),
    )
    url = f"http://127.0.0.1:{host_port(container, 8091)}"
    assert wait_for_http(container, url + "/").json()["greeting"] == "hi there"
    assert wait_for_health(container) == "healthy"
    # /data is where it persists; the image declares it as a volume.
    with httpx.Client(trust_env=False) as client:
        assert client.get(url + "/visits").json() == {"visits": 1}
        assert client.get(url + "/visits").json() == {"visits": 2}
    # `docker stop` reaches the service through tini and the executor: a clean exit.
    container.stop(timeout=20)
    assert container.wait(timeout=30)["StatusCode"] == 0, logs(container)


def test_runtime_without_code_says_what_to_set(run_container: Callable[..., Any]) -> None:
    container = run_container(RUNTIME_IMAGE)
    assert container.wait(timeout=60)["StatusCode"] != 0
    assert "EXECUTE_CODE" in logs(container)


def _wheel(name: str, version: str, module_source: str) -> bytes:
    """A minimal pure-Python wheel, so requirements install without reaching an index."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_source.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


@pytest.fixture
def custom_image(docker_client: Any, tmp_path: Path) -> Iterator[str]:
    """ML Lab's "Build a custom service image" pattern, FROM the runtime image."""
    service = tmp_path / "ml-service"
    service.mkdir()
    wheel = "greetpkg-1.0-py3-none-any.whl"
    (service / wheel).write_bytes(_wheel("greetpkg", "1.0", "WORDS = 'from an installed pkg'\n"))
    (service / "requirements.txt").write_text(f"/workspace/ml-service/{wheel}\n")
    (service / "__main__.py").write_text(
        textwrap.dedent("""\
        import os
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import greetpkg

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = greetpkg.WORDS.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
        """)
    )
    (tmp_path / "Dockerfile").write_text(
        textwrap.dedent(f"""\
        FROM {RUNTIME_IMAGE}
        COPY ml-service /workspace/ml-service
        ENV EXECUTE_CODE=/workspace/ml-service
        RUN python /resources/scripts/execute_code.py --requirements-only
        CMD ["python", "/resources/scripts/execute_code.py", "--code-only"]
        """)
    )
    tag = f"servicelab/test-custom-{uuid.uuid4().hex[:10]}:test"
    try:
        docker_client.images.build(path=str(tmp_path), tag=tag, rm=True, forcerm=True)
    except docker.errors.BuildError as error:
        output = "".join(str(chunk.get("stream", chunk)) for chunk in error.build_log)
        pytest.fail(f"building the custom image failed:\n{output}")
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.parametrize(
    "command",
    [
        None,  # the image's CMD: /resources/scripts/execute_code.py --code-only
        ["python", "/resources/docker-entrypoint.py", "--code-only"],  # the guide's variant
    ],
    ids=["execute_code", "docker-entrypoint"],
)
def test_runtime_custom_image_pattern(
    run_container: Callable[..., Any], custom_image: str, command: list[str] | None
) -> None:
    container = run_container(custom_image, command=command, ports=publish(8091))
    url = f"http://127.0.0.1:{host_port(container, 8091)}/"
    assert wait_for_http(container, url).text == "from an installed pkg"
    # The requirements were installed while building, not again at start.
    assert "installing requirements" not in logs(container)


# --- the FastAPI example --------------------------------------------------------------------


def test_example_image_answers_and_becomes_healthy(
    docker_client: Any, run_container: Callable[..., Any]
) -> None:
    token = f"secret-{uuid.uuid4().hex}"
    env = {
        "GREETING": "Hi",
        "LAB_API_TOKEN": token,
        "LAB_PROJECT": "demo",
        "LAB_ENDPOINT": "http://127.0.0.1:1",
        "LAB_SERVICE_PATH": "/api/projects/demo/services/example/",
    }
    volume = docker_client.volumes.create(f"servicelab-test-{uuid.uuid4().hex[:10]}")
    try:
        mounts = {volume.name: {"bind": "/data", "mode": "rw"}}
        container = run_container(
            EXAMPLE_IMAGE, environment=env, ports=publish(8080), volumes=mounts
        )
        url = f"http://127.0.0.1:{host_port(container, 8080)}"
        index = wait_for_http(container, url + "/")
        assert index.json()["greeting"] == "Hi"
        assert "LAB_API_TOKEN" in index.json()["lab_variables"]
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            assert client.get("/health").json() == {"status": "ok"}
            check = client.get("/env-check").json()
            assert check["LAB_PROJECT"] == "demo"
            assert check["has_api_token"] is True
            assert check["root_path"] == "/api/projects/demo/services/example/8080"
            for path in ("/", "/env-check"):
                assert token not in client.get(path).text
            # /docs under the proxy prefix: the page fetches openapi.json through the prefix.
            assert (
                "/api/projects/demo/services/example/8080/openapi.json" in client.get("/docs").text
            )
            # A proxy that keeps the prefix and says so (X-Forwarded-Prefix) works too.
            prefix = "/api/projects/demo/services/other/8080"
            info = client.get(
                prefix + "/request-info", headers={"X-Forwarded-Prefix": prefix}
            ).json()
            assert info["root_path"] == prefix
            assert client.get("/visits").json()["visits"] == 1
            assert client.get("/visits").json()["visits"] == 2
        assert wait_for_health(container) == "healthy"
        container.stop(timeout=20)

        # The counter lives in /data: a new container on the same volume goes on counting.
        again = run_container(EXAMPLE_IMAGE, ports=publish(8080), volumes=mounts)
        url = f"http://127.0.0.1:{host_port(again, 8080)}"
        wait_for_http(again, url + "/health")
        assert httpx.get(url + "/visits", trust_env=False).json()["visits"] == 3
        assert "visit 3" in logs(again)  # it logs to stdout
        again.remove(force=True, v=True)
        container.remove(force=True, v=True)
    finally:
        for leftover in docker_client.containers.list(all=True, filters={"volume": volume.name}):
            leftover.remove(force=True)
        volume.remove(force=True)


# --- the lab itself -------------------------------------------------------------------------

LAB_IMAGE = "servicelab/lab:test"


@pytest.mark.slow
def test_lab_image_serves_and_becomes_healthy(
    docker_client: Any, run_container: Callable[..., Any]
) -> None:
    """The root Dockerfile: `servicelab serve` on 8080 with /data, healthy by /healthz.

    The tag is kept after the test, so that the next build reuses its dependency layer.
    """
    try:
        docker_client.images.build(
            path=str(ROOT),
            tag=LAB_IMAGE,
            buildargs={"BASE_IMAGE": "servicelab/python:bookworm"},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as error:
        output = "".join(str(chunk.get("stream", chunk)) for chunk in error.build_log)
        pytest.fail(f"building the lab image failed:\n{output[-5000:]}")
    password = f"pw-{uuid.uuid4().hex}"
    container = run_container(
        LAB_IMAGE,
        environment={"SERVICELAB_ADMIN_PASSWORD": password},
        ports=publish(8080),
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
    )
    url = f"http://127.0.0.1:{host_port(container, 8080)}"
    assert wait_for_http(container, url + "/healthz").json()["data"]["status"] == "ok"
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
        login = client.get("/api/auth/login", auth=("admin", password))
        assert login.status_code == 200, login.text
    assert wait_for_health(container) == "healthy"
    assert password not in logs(container)


# --- Podman ------------------------------------------------------------------------------------

PODMAN_SOCKET = "unix:///run/podman/podman.sock"


@pytest.fixture(scope="session")
def podman_client(docker_client: Any) -> Iterator[Any]:
    """Podman's Docker-compatible API, with the test images loaded (set up once)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-podman.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/setup-podman.sh failed:\n{result.stdout}\n{result.stderr}")
    client = docker.DockerClient(base_url=PODMAN_SOCKET, timeout=120)
    yield client
    client.close()


@pytest.mark.podman
def test_example_image_on_podman(podman_client: Any) -> None:
    container = podman_client.containers.run(
        EXAMPLE_IMAGE,
        detach=True,
        environment={"GREETING": "Hi from Podman"},
        ports=publish(8080),
        labels={TEST_LABEL: "test_images"},
    )
    try:
        url = f"http://127.0.0.1:{host_port(container, 8080)}"
        assert wait_for_http(container, url + "/").json()["greeting"] == "Hi from Podman"
        # Podman runs no health checks by itself: run the image's HEALTHCHECK once.
        check = subprocess.run(
            ["podman", "healthcheck", "run", container.id], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        container.reload()
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        container.remove(force=True, v=True)
