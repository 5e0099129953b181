"""DockerRuntime against a real engine, with small images built in the test session.

The service image is a standard-library HTTP server (`SERVER` below) driven by
environment variables and URLs, so that one image can show every behaviour: ports,
/data, HEALTHCHECK, exit codes, running out of memory and logging.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from servicelab.runtimes.base import Address, Handle, RuntimeUnavailable, SpecError
from servicelab.runtimes.docker import LABEL_INSTANCE, DockerRuntime
from servicelab.runtimes.docker_health import health_config
from servicelab.runtimes.docker_rules import choose_connection_port, exposed_ports
from servicelab.runtimes.docker_stream import split_lines
from servicelab.spec import Phase, Resources, ServiceSpec

from . import runtime_contract as contract
from .dockertools import build_image

T = TypeVar("T")

PYTHON_IMAGE = "servicelab/python:bookworm"
SERVICE_IMAGE = "servicelab-test/docker-runtime-svc:test"
PORTS_IMAGE = "servicelab-test/docker-runtime-ports:test"
BARE_IMAGE = "servicelab-test/docker-runtime-bare:test"
ECHO_IMAGE = "servicelab-test/docker-runtime-echo:test"

SERVER = r"""
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default handler
if os.environ.get("EXIT_WITH"):
    print("exiting as asked", flush=True)
    sys.exit(int(os.environ["EXIT_WITH"]))
if os.environ.get("EAT_MEMORY_MB"):
    hog = []
    for _ in range(int(os.environ["EAT_MEMORY_MB"])):
        hog.append(bytearray(2**20))  # bytearray() writes its zeros: really resident
    time.sleep(60)
for i in range(int(os.environ.get("PRINT_LINES", "0"))):
    print(f"startup line {i}", flush=True)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        status, body = 200, "hello"
        if url.path == "/env":
            body = json.dumps({k: v for k, v in os.environ.items() if k.startswith("LAB_")})
        elif url.path == "/data":
            path = os.path.join(os.environ["LAB_DATA_DIR"], "note.txt")
            if "write" in query:
                with open(path, "w") as f:
                    f.write(query["write"])
            body = open(path).read() if os.path.exists(path) else ""
        elif url.path == "/health":
            status = 500 if os.path.exists("/tmp/sick") else 200
        elif url.path == "/sick":
            open("/tmp/sick", "w").close()
        elif url.path == "/log":
            print(query.get("text", ""), flush=True)
        body = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

port = int(os.environ.get("PORT", "8080"))
print(f"listening on {port}", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
"""

SERVICE_DOCKERFILE = f"""FROM {PYTHON_IMAGE}
COPY server.py /server.py
EXPOSE 9000 8080
HEALTHCHECK --interval=1s --timeout=3s --retries=2 \\
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/health || exit 1
CMD ["python3", "-u", "/server.py"]
"""

PORTS_DOCKERFILE = f"""FROM {PYTHON_IMAGE}
EXPOSE 7000 8091 53/udp
"""

BARE_DOCKERFILE = f"""FROM {PYTHON_IMAGE}
COPY server.py /server.py
CMD ["python3", "-u", "/server.py"]
"""

#: The shared contract's echo service (tests/services/echo-service) as an image.
ECHO_DOCKERFILE = f"""FROM {PYTHON_IMAGE}
COPY echo-service /srv/echo-service
EXPOSE 8091
CMD ["python3", "-u", "/srv/echo-service"]
"""


# --- no engine needed ------------------------------------------------------------------


def test_connection_port_rule() -> None:
    assert choose_connection_port(None, [80, 8080, 8091]) == 8080
    assert choose_connection_port(None, [7000, 8091]) == 8091
    assert choose_connection_port(None, [9000, 7000]) == 7000
    assert choose_connection_port(5000, [8080]) == 5000
    assert choose_connection_port(None, []) is None


def test_exposed_ports_keeps_tcp_only() -> None:
    config: dict[str, Any] = {"ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "7000": {}}}
    assert exposed_ports(config) == [7000, 8080]
    assert exposed_ports({}) == []


def test_health_config_forms() -> None:
    shell = health_config(
        {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f x || exit 1"], "Interval": 2 * 10**9}}
    )
    assert shell is not None
    assert shell.argv == ["/bin/sh", "-c", "curl -f x || exit 1"]
    assert (shell.interval, shell.timeout, shell.retries) == (2.0, 30.0, 3)
    plain = health_config({"Healthcheck": {"Test": ["CMD", "true"], "Retries": 5}})
    assert plain is not None and plain.argv == ["true"] and plain.retries == 5
    assert health_config({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert health_config({}) is None


def test_split_lines_across_chunks() -> None:
    chunks = [b"one\ntw", b"o\r\n", b"", b"thr", b"ee\nlast"]
    assert list(split_lines(chunks)) == ["one", "two", "three", "last"]


# --- on the engine ---------------------------------------------------------------------


def _build(client: Any, tag: str, dockerfile: str) -> None:
    """Build `tag` from `dockerfile`, with `server.py` and `echo-service/` in its context."""
    files = {"Dockerfile": dockerfile.encode(), "server.py": SERVER.encode()}
    echo = contract.ECHO_SERVICE
    for path in sorted(echo.rglob("*.py")):
        files[f"echo-service/{path.relative_to(echo)}"] = path.read_bytes()
    build_image(client, tag, files)


@pytest.fixture(scope="session")
def docker_images(docker_engine: Any) -> None:
    for tag, dockerfile in (
        (SERVICE_IMAGE, SERVICE_DOCKERFILE),
        (PORTS_IMAGE, PORTS_DOCKERFILE),
        (BARE_IMAGE, BARE_DOCKERFILE),
        (ECHO_IMAGE, ECHO_DOCKERFILE),
    ):
        _build(docker_engine, tag, dockerfile)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def instance_id() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
async def runtime(docker_images: None, instance_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(instance_id)
    try:
        yield rt
    finally:
        await rt.close()
        await asyncio.to_thread(_remove_everything_of, instance_id)


def _remove_everything_of(instance_id: str, base_url: str | None = None) -> None:
    """Remove what a test left behind: its containers, volumes and networks."""
    import docker

    client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    label = {"label": f"{LABEL_INSTANCE}={instance_id}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)
    for network in client.networks.list(filters=label):
        network.remove()
    client.close()


def _spec(**kwargs: Any) -> ServiceSpec:
    kwargs.setdefault("project", f"p{secrets.token_hex(3)}")
    kwargs.setdefault("name", "svc")
    kwargs.setdefault("image", SERVICE_IMAGE)
    return ServiceSpec(**kwargs)


async def eventually(check: Callable[[], Awaitable[T]], what: str, deadline: float = 60.0) -> T:
    """Poll `check` until it returns something truthy, failing after `deadline` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:  # not ready yet (connection refused...)
            last = exc
        if loop.time() > end:
            pytest.fail(f"{what}: not within {deadline} s (last: {last!r})")
        await asyncio.sleep(0.2)


def _get(address: Address, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(address.url + path, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def http_get(runtime: DockerRuntime, handle: Handle, path: str = "/") -> str:
    """GET `path` from the service's port 8080 once it answers; the body."""

    async def attempt() -> tuple[str] | None:  # a tuple: an empty body is an answer too
        address = await runtime.address(handle, 8080)
        if address is None:
            return None
        status, body = await asyncio.to_thread(_get, address, path)
        return (body,) if status == 200 else None

    answer = await eventually(attempt, f"GET {path}")
    assert answer is not None
    return answer[0]


async def start(runtime: DockerRuntime, spec: ServiceSpec, **env: str) -> Handle:
    spec = await runtime.prepare(spec)
    return await runtime.start(spec, {"LAB_PROJECT": spec.project, **env})


pytestmark = pytest.mark.anyio


@pytest.mark.docker
async def test_prepare_reads_ports_and_chooses_connection_port(runtime: DockerRuntime) -> None:
    spec = await runtime.prepare(_spec())
    assert sorted(spec.ports) == [8080, 9000]
    assert spec.connection_port == 8080

    spec = await runtime.prepare(_spec(image=PORTS_IMAGE))
    assert sorted(spec.ports) == [7000, 8091]
    assert spec.connection_port == 8091

    spec = await runtime.prepare(_spec(connection_port=9000))
    assert spec.connection_port == 9000

    progress: list[str] = []
    spec = await runtime.prepare(_spec(image=BARE_IMAGE, ports=[8080]), progress.append)
    assert spec.ports == [8080] and spec.connection_port == 8080


@pytest.mark.docker
async def test_prepare_explains_bad_specs(runtime: DockerRuntime) -> None:
    with pytest.raises(SpecError, match="exposes no port"):
        await runtime.prepare(_spec(image=BARE_IMAGE))
    with pytest.raises(SpecError, match="not found.*'never'"):
        await runtime.prepare(_spec(image="servicelab-test/no-such-image:1", pull_policy="never"))
    with pytest.raises(SpecError, match="pull policy"):
        await runtime.prepare(_spec(pull_policy="sometimes"))
    # Nothing can be pulled here (and a CI registry has no such image): a clear error.
    progress: list[str] = []
    with pytest.raises(SpecError, match="Could not pull image .*'always'"):
        await runtime.prepare(_spec(pull_policy="always"), progress.append)
    assert progress[0] == f"Pulling {SERVICE_IMAGE}"
    with pytest.raises(SpecError, match="Invalid image 'Bad Image!!'"):
        await runtime.prepare(_spec(image="Bad Image!!"))
    with pytest.raises(SpecError, match="not both"):
        await runtime.prepare(_spec(code="/srv/app"))
    with pytest.raises(SpecError, match="6 MiB"):
        await runtime.prepare(_spec(resources=Resources(memory=1000)))


@pytest.mark.docker
async def test_serves_with_env_labels_and_health(runtime: DockerRuntime, instance_id: str) -> None:
    spec = _spec()
    handle = await start(runtime, spec, LAB_SERVICE_PATH="/x/")
    assert handle["key"] == spec.key
    assert set(handle["ports"]) == {"8080", "9000"}
    assert handle["container_name"].startswith(f"{instance_id}-{spec.key}-")
    assert handle["volume"] == f"{instance_id}-{spec.key}-data"
    assert handle["network"] == f"{instance_id}-{spec.project}"

    assert await http_get(runtime, handle) == "hello"
    env = json.loads(await http_get(runtime, handle, "/env"))
    assert env["LAB_DATA_DIR"] == "/data"
    assert env["LAB_PROJECT"] == spec.project
    assert env["LAB_SERVICE_PATH"] == "/x/"

    address = await runtime.address(handle, 8080)
    assert address is not None and address.host == "127.0.0.1"
    assert await runtime.address(handle, 1234) is None

    async def healthy() -> bool:
        status = await runtime.status(handle)
        return status.phase is Phase.RUNNING and status.healthy is True

    await eventually(healthy, "healthy from the image's HEALTHCHECK")
    await http_get(runtime, handle, "/sick")

    async def unhealthy() -> Any:
        status = await runtime.status(handle)
        return status if status.phase is Phase.UNHEALTHY else None

    status = await eventually(unhealthy, "unhealthy after /sick")
    assert status.healthy is False
    assert "health check failed" in (status.reason or "")

    await runtime.stop(handle, timeout=5)
    assert await runtime.address(handle, 8080) is None
    assert (await runtime.status(handle)).phase is Phase.STOPPED
    assert [line async for line in runtime.logs(handle)] == []  # gone, not an error
    await runtime.stop(handle)  # stopping again is no error
    # A runtime that did not stop it (a restarted lab) sees it vanished.
    other = DockerRuntime(instance_id)
    status = await other.status(handle)
    await other.close()
    assert status.phase is Phase.FAILED and status.reason == "container vanished"


@pytest.mark.docker
async def test_runs_healthcheck_itself_where_the_engine_does_not(instance_id: str) -> None:
    # What happens on Podman without systemd, forced here on Docker.
    runtime = DockerRuntime(instance_id, run_health_checks=True)
    try:
        handle = await start(runtime, _spec())

        async def health(phase: Phase) -> Any:
            status = await runtime.status(handle)
            return status if status.phase is phase else None

        status = await eventually(lambda: health(Phase.RUNNING), "healthy by our own check")
        assert status.healthy is True
        assert status.extra["health_checked_by"] == "servicelab"
        await http_get(runtime, handle, "/sick")
        status = await eventually(lambda: health(Phase.UNHEALTHY), "unhealthy by our check")
        assert status.healthy is False
        await runtime.stop(handle, timeout=5)
    finally:
        await runtime.close()
        await asyncio.to_thread(_remove_everything_of, instance_id)


@pytest.mark.docker
async def test_code_spec_runs_in_runtime_image(instance_id: str) -> None:
    runtime = DockerRuntime(instance_id, runtime_image=ECHO_IMAGE)
    try:
        spec = await runtime.prepare(_spec(image=None, code="git+https://example.invalid/x.git"))
        assert (spec.ports, spec.connection_port) == ([8091], 8091)
        async with contract.serving(runtime, spec) as (_, handle, address):
            env = (await contract.get(address, "/env")).json()
            assert env["EXECUTE_CODE"] == "git+https://example.invalid/x.git"
            assert env["PORT"] == "8091"
            assert handle["image"] == ECHO_IMAGE
    finally:
        await runtime.close()
        await asyncio.to_thread(_remove_everything_of, instance_id)


@pytest.mark.docker
async def test_usage_comes_from_the_engine(runtime: DockerRuntime) -> None:
    handle = await start(runtime, _spec())
    assert await http_get(runtime, handle) == "hello"
    usage = await runtime.usage(handle)
    assert usage is not None and usage.cpu_seconds > 0 and usage.memory_bytes > 0
    await runtime.stop(handle, timeout=5)
    assert await runtime.usage(handle) is None


@pytest.mark.docker
async def test_image_without_healthcheck_has_healthy_none(runtime: DockerRuntime) -> None:
    handle = await start(runtime, _spec(image=BARE_IMAGE, ports=[8080]))
    assert await http_get(runtime, handle) == "hello"
    status = await runtime.status(handle)
    assert status.phase is Phase.RUNNING and status.healthy is None
    await runtime.stop(handle, timeout=5)


@pytest.mark.docker
async def test_data_survives_new_containers_until_deleted(runtime: DockerRuntime) -> None:
    spec = await runtime.prepare(_spec())
    first = await runtime.start(spec, {})
    assert await http_get(runtime, first, "/data?write=kept") == "kept"
    await runtime.stop(first, timeout=5)
    assert await runtime.kept_data() == [spec.key]

    second = await runtime.start(spec, {})
    assert second["container_id"] != first["container_id"]
    assert await http_get(runtime, second, "/data") == "kept"
    assert await runtime.kept_data() == []
    await runtime.stop(second, timeout=5)

    await runtime.delete_data(spec)
    assert await runtime.kept_data() == []
    third = await runtime.start(spec, {})
    assert await http_get(runtime, third, "/data") == ""
    await runtime.stop(third, timeout=5)
    await runtime.delete_data(spec)
    await runtime.delete_data(spec)  # deleting twice is no error


@pytest.mark.docker
async def test_exit_code_is_reported(runtime: DockerRuntime) -> None:
    handle = await start(runtime, _spec(), EXIT_WITH="3")

    async def failed() -> Any:
        status = await runtime.status(handle)
        return status if status.phase is Phase.FAILED else None

    status = await eventually(failed, "exit reported")
    assert status.exit_code == 3
    # The reason names the line that says why, as on the local runtime.
    assert status.reason == "exited with code 3: exiting as asked"
    assert not status.oom_killed
    assert await runtime.address(handle, 8080) is None
    lines = [line async for line in runtime.logs(handle)]
    assert lines == ["exiting as asked"]
    await runtime.stop(handle)


@pytest.mark.docker
async def test_out_of_memory_is_reported(runtime: DockerRuntime) -> None:
    spec = _spec(resources=Resources(memory=32 * 2**20, cpus=0.5))
    handle = await start(runtime, spec, EAT_MEMORY_MB="256")

    async def failed() -> Any:
        status = await runtime.status(handle)
        return status if status.phase is Phase.FAILED else None

    status = await eventually(failed, "out-of-memory kill reported")
    assert status.oom_killed
    assert status.reason == "killed: out of memory (limit 32 MiB)"
    await runtime.stop(handle)


@pytest.mark.docker
async def test_logs_tail_since_and_follow(runtime: DockerRuntime) -> None:
    handle = await start(runtime, _spec(), PRINT_LINES="5")
    await http_get(runtime, handle)  # serving: all startup lines are written

    lines = [line async for line in runtime.logs(handle)]
    assert lines == [f"startup line {i}" for i in range(5)] + ["listening on 8080"]
    tail = [line async for line in runtime.logs(handle, tail=2)]
    assert tail == ["startup line 4", "listening on 8080"]
    assert [line async for line in runtime.logs(handle, tail=0)] == []

    # `since` a moment after the startup lines: only what comes later.
    mark = datetime.now(UTC)
    await eventually(lambda: _later(mark), "the clock to move past the mark")
    await http_get(runtime, handle, "/log?text=after-mark")
    assert [line async for line in runtime.logs(handle, since=mark)] == ["after-mark"]

    followed: list[str] = []

    async def follow() -> None:
        async for line in runtime.logs(handle, tail=0, follow=True):
            followed.append(line)

    task = asyncio.create_task(follow())
    try:

        async def seen() -> bool:
            await http_get(runtime, handle, "/log?text=followed")
            return "followed" in followed

        await eventually(seen, "a followed line")
        # Follow ends when the container stops.
        await runtime.stop(handle, timeout=5)
        await asyncio.wait_for(task, timeout=30)
    finally:
        task.cancel()


async def _later(mark: datetime) -> bool:
    return datetime.now(UTC).timestamp() > mark.timestamp() + 0.01


@pytest.mark.docker
async def test_closing_a_follow_early_releases_it(runtime: DockerRuntime) -> None:
    handle = await start(runtime, _spec(), PRINT_LINES="3")
    await http_get(runtime, handle)
    stream = runtime.logs(handle, follow=True)
    first = await anext(stream)
    assert first == "startup line 0"
    await stream.aclose()  # type: ignore[attr-defined]
    await runtime.stop(handle, timeout=5)


@pytest.mark.docker
async def test_adopt_after_restart_of_the_lab(runtime: DockerRuntime, instance_id: str) -> None:
    spec = _spec()
    handle = await start(runtime, spec)
    await http_get(runtime, handle)

    restarted = DockerRuntime(instance_id)
    other_lab = DockerRuntime(f"other-{instance_id}")
    try:
        adopted = await restarted.adopt()
        assert [a.key for a in adopted] == [spec.key]
        again = adopted[0].handle
        assert again["container_id"] == handle["container_id"]
        assert again["ports"] == handle["ports"]
        assert await restarted.address(again, 8080) == await runtime.address(handle, 8080)
        assert await http_get(restarted, again) == "hello"
        assert await other_lab.adopt() == []
        # Adopting starts nothing: still the one container.
        assert [a.key for a in await restarted.adopt()] == [spec.key]
        await restarted.stop(again, timeout=5)
        assert await restarted.adopt() == []
    finally:
        await restarted.close()
        await other_lab.close()


@pytest.mark.docker
async def test_available(docker_images: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await DockerRuntime.available() is True
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert await DockerRuntime.available() is False
    runtime = DockerRuntime("test-no-engine")
    with pytest.raises(RuntimeUnavailable, match="does not answer"):
        await runtime.prepare(_spec())
    await runtime.close()


# --- the contract shared with the other runtimes -----------------------------------------


def echo_spec() -> ServiceSpec:
    return _spec(image=ECHO_IMAGE, name="echo")


@pytest.mark.docker
@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_contract(
    runtime: DockerRuntime, check: Callable[[DockerRuntime, ServiceSpec], Awaitable[None]]
) -> None:
    await check(runtime, echo_spec())


@pytest.mark.docker
async def test_contract_adopt_finds_exactly_one(runtime: DockerRuntime, instance_id: str) -> None:
    handle = await contract.check_adopt(runtime, lambda: DockerRuntime(instance_id), echo_spec())
    assert json.loads(json.dumps(handle)) == handle


# --- Podman's Docker-compatible API ------------------------------------------------------

PODMAN_SOCKET = "/run/podman/podman.sock"
PODMAN_URL = f"unix://{PODMAN_SOCKET}"


@pytest.fixture(scope="session")
def podman_images() -> Iterator[str]:
    """Podman's API URL, with the test images built there (skip when it is missing)."""
    import docker

    if not os.path.exists(PODMAN_SOCKET):
        pytest.skip(f"no Podman API at {PODMAN_SOCKET}; run scripts/setup-podman.sh")
    client = docker.DockerClient(base_url=PODMAN_URL, timeout=60)
    try:
        client.images.get(PYTHON_IMAGE)
    except Exception:
        pytest.skip(f"{PYTHON_IMAGE} is missing on Podman; run scripts/setup-podman.sh")
    _build(client, SERVICE_IMAGE, SERVICE_DOCKERFILE)
    _build(client, ECHO_IMAGE, ECHO_DOCKERFILE)
    client.close()
    yield PODMAN_URL


@pytest.fixture
async def podman_runtime(
    podman_images: str, instance_id: str
) -> AsyncIterator[Callable[[], DockerRuntime]]:
    """Makes runtimes (a first one, restarted labs...) on Podman's API."""
    import docker

    clients: list[Any] = []
    runtimes: list[DockerRuntime] = []

    def make() -> DockerRuntime:
        clients.append(docker.DockerClient(base_url=podman_images, timeout=60))
        runtimes.append(DockerRuntime(instance_id, client=clients[-1]))
        return runtimes[-1]

    try:
        yield make
    finally:
        for runtime in runtimes:
            await runtime.close()
        await asyncio.to_thread(_remove_everything_of, instance_id, podman_images)
        for client in clients:
            client.close()


@pytest.mark.podman
async def test_podman_deploy_address_logs_stop_and_own_healthcheck(
    podman_runtime: Callable[[], DockerRuntime],
) -> None:
    runtime = podman_runtime()
    handle = await start(runtime, _spec(), PRINT_LINES="2")
    assert await http_get(runtime, handle) == "hello"

    async def health(phase: Phase) -> Any:
        status = await runtime.status(handle)
        return status if status.phase is phase else None

    # Podman without systemd runs no HEALTHCHECK: the runtime runs it itself.
    status = await eventually(lambda: health(Phase.RUNNING), "healthy on Podman")
    assert status.healthy is True
    assert status.extra["health_checked_by"] == "servicelab"
    await http_get(runtime, handle, "/sick")
    status = await eventually(lambda: health(Phase.UNHEALTHY), "unhealthy on Podman")
    assert status.healthy is False

    usage = await runtime.usage(handle)
    assert usage is not None and usage.cpu_seconds > 0 and usage.memory_bytes > 0
    lines = [line async for line in runtime.logs(handle)]
    assert lines[:2] == ["startup line 0", "startup line 1"]
    assert [a.key for a in await podman_runtime().adopt()] == [handle["key"]]
    await runtime.stop(handle, timeout=5)
    assert (await runtime.status(handle)).phase is Phase.STOPPED
    assert await runtime.address(handle, 8080) is None


@pytest.mark.podman
@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_podman_contract(
    podman_runtime: Callable[[], DockerRuntime],
    check: Callable[[DockerRuntime, ServiceSpec], Awaitable[None]],
) -> None:
    await check(podman_runtime(), echo_spec())


@pytest.mark.podman
async def test_podman_contract_adopt(podman_runtime: Callable[[], DockerRuntime]) -> None:
    await contract.check_adopt(podman_runtime(), podman_runtime, echo_spec())


@pytest.mark.docker
async def test_lab_in_container_reaches_services_by_name(instance_id: str) -> None:
    """A lab in a container joins each project network and calls services by name."""
    import docker

    client = docker.from_env()
    lab = client.containers.run(
        PYTHON_IMAGE, ["sleep", "600"], detach=True, labels={LABEL_INSTANCE: instance_id}
    )
    runtime = DockerRuntime(instance_id, lab_in_container=True, lab_container=lab.name)
    try:
        handle = await start(runtime, _spec())
        assert handle["ports"] == {}  # nothing published on the host
        address = await runtime.address(handle, 8080)
        assert address == Address(handle["container_name"], 8080)
        assert await runtime.address(handle, 1234) is None

        def fetch() -> tuple[int, bytes]:
            result = lab.exec_run(["curl", "-fsS", f"{address.url}/"])
            return result.exit_code, result.output

        async def answers() -> bool:
            code, output = await asyncio.to_thread(fetch)
            return code == 0 and output == b"hello"

        await eventually(answers, "the service by name from the lab's container")
        await runtime.stop(handle, timeout=5)
    finally:
        await runtime.close()
        await asyncio.to_thread(lab.remove, force=True)
        await asyncio.to_thread(_remove_everything_of, instance_id)
        client.close()
