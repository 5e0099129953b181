"""Issue 26's hardening gaps, limits part: a service whose spec asks for no limits runs with
the lab's (memory, CPUs, processes) on the sandboxed local runtime and on Docker, and the
service page says which limits are the lab's; Docker image services keep no capability
beyond the few that let an image's root start-up hand over to its own user.

The hostile side is `tests/services/limits-probe`: it starts as many threads as it is
allowed, eats memory, opens a raw socket and reports its capabilities. Each lab here has
small defaults (`SERVICELAB_DEFAULT_*`), so that the probe reaches them quickly.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..dockertools import LABEL_INSTANCE, build_image, remove_everything_of
from ..labtools import ADMIN_PASSWORD, ROOT, LabProcess, stop_local_services, wait_until

PROBE = ROOT / "tests" / "services" / "limits-probe"
MIB = 2**20
PIDS = 48
MEMORY = 96 * MIB
CPUS = 0.5
DEFAULTS = {
    "SERVICELAB_DEFAULT_MEMORY": str(MEMORY),
    "SERVICELAB_DEFAULT_CPUS": str(CPUS),
    "SERVICELAB_DEFAULT_PIDS": str(PIDS),
}
#: More threads than any default here allows; far fewer than a machine allows.
MANY_THREADS = 200


def _put(lab: LabProcess, name: str, spec: dict[str, Any]) -> None:
    """Deploy or update `name` in project `hard` and wait until it runs."""
    with lab.client(timeout=120) as api:
        r = api.put(f"/api/projects/hard/services/{name}", json=spec)
        assert r.status_code in (200, 201), r.text  # created, or updated

        def running() -> bool:
            data = api.get(f"/api/projects/hard/services/{name}").json()["data"]
            assert data["status"] != "failed", data
            return bool(data["status"] == "running")

        wait_until(running, timeout=180, interval=0.2, what=f"{name} running")


def _probe(lab: LabProcess, name: str, port: int, path: str) -> str:
    with lab.client(timeout=60) as api:
        r = api.get(f"/api/projects/hard/services/{name}/{port}{path}")
        assert r.status_code == 200, r.text
        return r.text


def _start_lab(factory: pytest.TempPathFactory, name: str, env: dict[str, str]) -> LabProcess:
    data_dir = factory.mktemp(name) / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={**DEFAULTS, **env}).start()
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "hard"}).status_code == 201
    return lab


# --- the local runtime's sandbox --------------------------------------------------------


@pytest.fixture(scope="module")
def local_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    env = {"SERVICELAB_RUNTIME": "local", "SERVICELAB_LOCAL_SANDBOX": "required"}
    lab = _start_lab(tmp_path_factory, "hardening-local", env)
    try:
        yield lab
    finally:
        lab.stop()
        stop_local_services(lab.data_dir)


def test_a_sandboxed_service_runs_with_the_lab_limits(local_lab: LabProcess) -> None:
    _put(local_lab, "probe", {"code": str(PROBE), "restart": "no"})
    threads = int(_probe(local_lab, "probe", 8091, f"/threads?n={MANY_THREADS}"))
    assert 0 < threads < PIDS, threads
    assert _probe(local_lab, "probe", 8091, "/") == "ok"  # stopped at the limit, not killed
    with local_lab.client(timeout=60) as api:
        api.get("/api/projects/hard/services/probe/8091/eat?mb=400")  # fails: it is killed

        def failed() -> dict[str, Any] | None:
            data = api.get("/api/projects/hard/services/probe").json()["data"]
            return data if data["status"] == "failed" else None

        service = wait_until(failed, timeout=60, what="the probe killed")
    assert service["reason"] == "killed: out of memory (limit 96 MiB)", service


def test_the_service_page_says_which_limits_are_the_lab_s(local_lab: LabProcess) -> None:
    _put(local_lab, "paged", {"code": str(PROBE), "resources": {"cpus": 0.25}})
    with httpx.Client(base_url=local_lab.url, timeout=30) as browser:
        r = browser.post(
            "/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/projects"},
        )
        assert r.status_code == 303, r.text  # logged in: on to the projects
        page = browser.get("/projects/hard/services/paged").text
    assert 'id="limits"' in page, "the page shows the service's limits"
    shown = " ".join(page.split('id="limits"', 1)[1].split("</dd>", 1)[0].split())
    assert "96.0 MiB memory <span" in shown and "(lab default)" in shown
    assert "0.25 CPUs</span>" in shown  # its own: not called a default
    assert f"{PIDS} processes <span" in shown


# --- Docker --------------------------------------------------------------------------------

PYTHON_IMAGE = "servicelab/python:bookworm"
RUNTIME_IMAGE = "servicelab/runtime:test"
#: The probe as an image that runs as root (as most images do).
ROOT_IMAGE = "servicelab-test/limits-probe:test"
#: The same, starting as root on port 80 and handing over to uid 1234, its root parent
#: staying to pass SIGTERM on.
HANDOVER_IMAGE = "servicelab-test/limits-probe-handover:test"
#: CHOWN, KILL, SETGID, SETUID, NET_BIND_SERVICE (bits 0, 5, 6, 7, 10): what an image
#: service keeps.
KEPT_CAPABILITIES = (1 << 0) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10)


def _probe_dockerfile(extra: str) -> bytes:
    return (
        f"FROM {PYTHON_IMAGE}\nCOPY __main__.py /probe/__main__.py\n{extra}"
        'CMD ["python3", "-u", "/probe/__main__.py"]\n'
    ).encode()


@pytest.fixture(scope="module")
def docker_lab(
    docker_engine: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabProcess]:
    """A lab on Docker with small default limits, and the probe's images."""
    source = (PROBE / "__main__.py").read_bytes()
    build_image(
        docker_engine,
        ROOT_IMAGE,
        {"Dockerfile": _probe_dockerfile("EXPOSE 8091\n"), "__main__.py": source},
    )
    handover = "ENV PORT=80 DROP_TO=1234 INIT=1\nEXPOSE 80\n"
    build_image(
        docker_engine,
        HANDOVER_IMAGE,
        {"Dockerfile": _probe_dockerfile(handover), "__main__.py": source},
    )
    instance_id = f"hardening-{secrets.token_hex(4)}"
    env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
    }
    lab = _start_lab(tmp_path_factory, "hardening-docker", env)
    try:
        yield lab
    finally:
        lab.stop()
        remove_everything_of(docker_engine, instance_id)


def _host_config(engine: Any, lab: LabProcess, name: str) -> dict[str, Any]:
    (container,) = [
        c
        for c in engine.containers.list(filters={"label": f"servicelab.key=hard--{name}"})
        if c.labels.get(LABEL_INSTANCE) == lab.env["SERVICELAB_INSTANCE_ID"]
    ]
    return dict(container.attrs["HostConfig"])


@pytest.mark.docker
def test_a_docker_image_service_has_no_added_capabilities_and_the_lab_limits(
    docker_lab: LabProcess, docker_engine: Any
) -> None:
    _put(docker_lab, "rooted", {"image": ROOT_IMAGE})
    # It runs as root, yet without NET_RAW and the other defaults of Docker.
    assert _probe(docker_lab, "rooted", 8091, "/whoami") == "0"
    assert _probe(docker_lab, "rooted", 8091, "/raw") == "refused"
    assert int(_probe(docker_lab, "rooted", 8091, "/caps"), 16) == KEPT_CAPABILITIES
    threads = int(_probe(docker_lab, "rooted", 8091, f"/threads?n={MANY_THREADS}"))
    assert 0 < threads < PIDS, threads
    assert _probe(docker_lab, "rooted", 8091, "/") == "ok"
    host = _host_config(docker_engine, docker_lab, "rooted")
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert (host["PidsLimit"], host["Memory"], host["NanoCpus"]) == (PIDS, MEMORY, CPUS * 1e9)


@pytest.mark.docker
def test_an_image_that_hands_over_to_its_own_user_still_works(docker_lab: LabProcess) -> None:
    """Bound port 80 as root, made /data its user's, switched to it, its root parent
    passing a stop on: what the kept capabilities are for (the official images of nginx
    and postgres do so)."""
    _put(docker_lab, "handover", {"image": HANDOVER_IMAGE})
    assert _probe(docker_lab, "handover", 80, "/whoami") == "1234"
    assert _probe(docker_lab, "handover", 80, "/data?write=kept") == "kept"
    assert int(_probe(docker_lab, "handover", 80, "/caps"), 16) == 0
    # A stop reaches the server through its root parent: it ends gracefully.
    with docker_lab.client(timeout=60) as api:
        path = "/api/projects/hard/services/handover"
        assert api.post(f"{path}/stop").status_code == 200
        assert api.post(f"{path}/start").status_code == 200
    _put(docker_lab, "handover", {"image": HANDOVER_IMAGE})
    assert _probe(docker_lab, "handover", 80, "/data") == "stopped"


@pytest.mark.docker
def test_a_docker_code_service_has_the_lab_limits_and_its_own(
    docker_lab: LabProcess, docker_engine: Any
) -> None:
    _put(docker_lab, "coded", {"code": str(PROBE)})
    assert int(_probe(docker_lab, "coded", 8091, "/caps"), 16) == 0
    threads = int(_probe(docker_lab, "coded", 8091, f"/threads?n={MANY_THREADS}"))
    assert 0 < threads < PIDS, threads
    host = _host_config(docker_engine, docker_lab, "coded")
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert (host["PidsLimit"], host["Memory"]) == (PIDS, MEMORY)
    # Its own memory limit wins over the lab's default.
    _put(docker_lab, "coded", {"code": str(PROBE), "resources": {"memory": "200m"}})
    wait_until(
        lambda: _host_config(docker_engine, docker_lab, "coded")["Memory"] == 200 * MIB,
        timeout=60,
        what="the updated container",
    )
    assert _host_config(docker_engine, docker_lab, "coded")["PidsLimit"] == PIDS
