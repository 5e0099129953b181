"""Services on the local-process runtime, through the REST API and the proxy of a real lab."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from .labtools import ROOT, LabProcess, stop_local_services, wait_until

ECHO = str(ROOT / "tests" / "services" / "echo-service")
WITH_REQUIREMENTS = str(ROOT / "tests" / "services" / "with-requirements")
NO_MAIN = str(ROOT / "tests" / "services" / "no-main")


def deploy(api: httpx.Client, project: str, name: str, code: str = ECHO, **env: str) -> dict:
    r = api.post(
        f"/api/projects/{project}/services",
        params={"name": name},
        json={"EXECUTE_CODE": code, **env},
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


def service(api: httpx.Client, project: str, name: str) -> dict:
    r = api.get(f"/api/projects/{project}/services/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def wait_running(api: httpx.Client, project: str, name: str, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (s := service(api, project, name))["status"] == "running" and s,
        timeout=timeout,
        what=f"{name} running",
    )


def proxied(api: httpx.Client, project: str, name: str, path: str = "", **kw) -> httpx.Response:
    return api.get(f"/api/projects/{project}/services/{name}/8091/{path}", **kw)


@pytest.fixture
def api(lab_process: LabProcess):
    with lab_process.client() as client:
        assert client.post("/api/projects", json={"name": "demo"}).status_code == 201
        yield client


def service_pids(data_dir: Path, key: str) -> list[int]:
    """PIDs of processes running the service's code: by the uid of its sandbox, or (not
    sandboxed) by the data folder in their environment."""
    pids = []
    ids_file = data_dir / "services" / key / "sandbox-ids.json"
    uid = json.loads(ids_file.read_text())["uid"] if ids_file.exists() else None
    marker = f"LAB_DATA_DIR={data_dir / 'services' / key / 'data'}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            owner = entry.stat().st_uid
        except OSError:
            continue
        ours = (
            owner == uid
            if uid is not None
            else marker in environ.split(b"\0") and b"echo-service" in cmdline
        )
        if ours and b"execute" not in cmdline and b"bwrap" not in cmdline:
            pids.append(int(entry.name))
    return pids


def test_deploy_reach_and_lab_variables(api: httpx.Client, lab_process: LabProcess) -> None:
    created = deploy(api, "demo", "echo", GREETING="hello", DB_PASSWORD="hunter2")
    assert created["status"] in ("starting", "running")
    assert created["configuration"]["LAB_API_TOKEN"] == "********"
    assert created["configuration"]["DB_PASSWORD"] == "********"
    assert created["configuration"]["GREETING"] == "hello"
    assert "hunter2" not in str(created)
    running = wait_running(api, "demo", "echo")
    assert running["isHealthy"] is True
    assert running["ports"][0]["path"] == "/api/projects/demo/services/echo/8091/"

    env = proxied(api, "demo", "echo", "env").json()
    lab_port = lab_process.url.rsplit(":", 1)[1]
    # A sandboxed service has a network of its own: it reaches a lab on loopback at its
    # gateway, and listens on its own port there.
    sandboxed = env["LAB_DATA_DIR"] == "/data"
    at_gateway = f"http://10.213.0.1:{lab_port}"
    assert env["LAB_ENDPOINT"] == (at_gateway if sandboxed else lab_process.url)
    assert env["LAB_PROJECT"] == "demo"
    assert env["LAB_SERVICE_PATH"] == "/api/projects/demo/services/echo/"
    assert env["LAB_SERVICE_URL"] == "/api/projects/demo/services/echo/8091/"
    # Its own origin on the lab's port; together with the path, where the UI opens it.
    assert env["LAB_SERVICE_ORIGIN"] == f"http://echo--demo.localhost:{lab_port}"
    assert running["url"] == env["LAB_SERVICE_ORIGIN"] + env["LAB_SERVICE_URL"]
    assert env["GREETING"] == "hello"
    # Unsandboxed: a free port of the host, mapped to the route's 8091.
    assert (env["PORT"] == "8091") if sandboxed else (env["PORT"] != "8091")
    # The service's token opens its project, and only that one.
    token = env["LAB_API_TOKEN"]
    assert token.startswith("slp_")
    assert (
        httpx.get(
            f"{lab_process.url}/api/projects/demo", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )
    api.post("/api/projects", json={"name": "other"})
    assert (
        httpx.get(
            f"{lab_process.url}/api/projects/other", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 404  # as if absent: a token learns nothing of other projects
    )
    # No service listing ever shows a token, and none is left on disk.
    listing = api.get("/api/projects/demo/services").text
    assert token not in listing
    for path in lab_process.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert token.encode() not in path.read_bytes(), path


def test_body_overrides_lab_variables(api: httpx.Client) -> None:
    deploy(api, "demo", "override", LAB_PROJECT="custom", LAB_ENDPOINT="http://example.invalid")
    wait_running(api, "demo", "override")
    env = proxied(api, "demo", "override", "env").json()
    assert env["LAB_PROJECT"] == "custom"
    assert env["LAB_ENDPOINT"] == "http://example.invalid"


def test_data_survives_restart_and_redeploy(api: httpx.Client) -> None:
    deploy(api, "demo", "keeper")
    wait_running(api, "demo", "keeper")
    r = api.post("/api/projects/demo/services/keeper/8091/data", content=b"precious")
    assert r.status_code == 200
    assert api.post("/api/projects/demo/services/keeper/restart").status_code == 200
    wait_running(api, "demo", "keeper")
    assert proxied(api, "demo", "keeper", "data").text == "precious"
    # A redeploy with a changed spec (PUT) keeps /data too.
    r = api.put("/api/projects/demo/services/keeper", json={"code": ECHO, "env": {"VERSION": "2"}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["message"] == "Updated."
    wait_running(api, "demo", "keeper")
    assert proxied(api, "demo", "keeper", "env").json()["VERSION"] == "2"
    assert proxied(api, "demo", "keeper", "data").text == "precious"
    # Delete keeps the data unless purged; a new service of the same name finds it again.
    assert api.delete("/api/projects/demo/services/keeper").status_code == 200
    assert api.get("/api/projects/demo/volumes").json()["data"] == ["keeper"]
    deploy(api, "demo", "keeper")
    wait_running(api, "demo", "keeper")
    assert proxied(api, "demo", "keeper", "data").text == "precious"
    assert (
        api.delete("/api/projects/demo/services/keeper", params={"purge": "true"}).status_code
        == 200
    )
    assert api.get("/api/projects/demo/volumes").json()["data"] == []


def test_a_starting_service_says_what_it_does(api: httpx.Client) -> None:
    deploy(api, "demo", "slow", START_DELAY="4")
    starting = wait_until(
        lambda: (
            (s := service(api, "demo", "slow"))["reason"]
            and "loading the model" in s["reason"]
            and s
        ),
        timeout=30,
        what="the service's last log line as its reason",
    )
    assert starting["status"] == "starting"
    assert wait_running(api, "demo", "slow")["reason"] is None


def test_put_is_idempotent(api: httpx.Client) -> None:
    spec = {"code": ECHO, "env": {"A": "1"}}
    first = api.put("/api/projects/demo/services/same", json=spec)
    assert first.status_code == 201, first.text
    wait_running(api, "demo", "same")
    started = service(api, "demo", "same")["startedAt"]
    again = api.put("/api/projects/demo/services/same", json=spec)
    assert again.status_code == 200
    assert service(api, "demo", "same")["startedAt"] == started


def test_logs_tail_since_and_follow(api: httpx.Client, lab_process: LabProcess) -> None:
    logs_url = "/api/projects/demo/services/talker/logs"
    deploy(api, "demo", "talker")
    wait_running(api, "demo", "talker")
    proxied(api, "demo", "talker", "log", params={"n": "5", "text": "hello"})
    wait_until(lambda: "hello 4" in api.get(logs_url).json()["data"], what="log lines")

    tail = api.get(logs_url, params={"tail": 3}).json()["data"].splitlines()
    full = api.get(logs_url).json()["data"].splitlines()
    assert len(tail) == 3
    assert "\n".join(tail) in "\n".join(full)  # the last lines, in order
    assert "hello 0" not in tail

    since = datetime.now(UTC).isoformat()
    proxied(api, "demo", "talker", "log", params={"n": "1", "text": "later"})
    recent = wait_until(
        lambda: "later 0" in (t := api.get(logs_url, params={"since": since}).json()["data"]) and t,
        what="lines since",
    )
    assert "hello 0" not in recent

    received: list[str] = []
    with (
        httpx.Client(base_url=lab_process.url, headers=api.headers, timeout=30) as follower,
        follower.stream("GET", logs_url, params={"follow": "true", "tail": 0}) as stream,
    ):
        lines = stream.iter_lines()
        proxied(api, "demo", "talker", "log", params={"n": "1", "text": "live"})
        for line in lines:
            received.append(line)
            if "live 0" in line:
                break
    assert any("live 0" in line for line in received)
    assert not any("hello 0" in line for line in received)


def test_crashing_service_is_restarted_and_says_why(api: httpx.Client) -> None:
    deploy(api, "demo", "crasher")
    wait_running(api, "demo", "crasher")
    proxied(api, "demo", "crasher", "crash")
    failed = wait_until(
        lambda: (s := service(api, "demo", "crasher"))["status"] == "failed" and s, what="failure"
    )
    assert "exited with code 3" in failed["reason"]
    again = wait_running(api, "demo", "crasher", timeout=60)
    assert again["restarts"] >= 1
    assert "code 3" in (again["reason"] or "") or again["reason"] is None


def test_stop_and_start(api: httpx.Client) -> None:
    deploy(api, "demo", "pausable")
    wait_running(api, "demo", "pausable")
    stopped = api.post("/api/projects/demo/services/pausable/stop").json()["data"]
    assert stopped["status"] == "stopped"
    r = proxied(api, "demo", "pausable")
    assert r.status_code == 503
    assert api.post("/api/projects/demo/services/pausable/start").status_code == 200
    wait_running(api, "demo", "pausable")
    assert proxied(api, "demo", "pausable").text == "ok"


def test_delete_stops_process_and_revokes_token(api: httpx.Client, lab_process: LabProcess) -> None:
    deploy(api, "demo", "doomed")
    wait_running(api, "demo", "doomed")
    env = proxied(api, "demo", "doomed", "env").json()
    port, token = int(env["PORT"]), env["LAB_API_TOKEN"]
    assert api.delete("/api/projects/demo/services/doomed").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    wait_until(
        lambda: (
            httpx.get(
                f"{lab_process.url}/api/projects/demo", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 401
        ),
        timeout=5,
        what="service token revoked",
    )
    assert api.get("/api/projects/demo/services/doomed").status_code == 404


def test_requirements_are_installed(api: httpx.Client) -> None:
    deploy(api, "demo", "needs-six", code=WITH_REQUIREMENTS)
    wait_running(api, "demo", "needs-six", timeout=120)
    assert proxied(api, "demo", "needs-six").text.startswith("six ")


def test_clear_errors(api: httpx.Client) -> None:
    def error(r: httpx.Response, status: int) -> str:
        assert r.status_code == status, r.text
        return str(r.json()["errors"]["message"])

    post = "/api/projects/demo/services"
    assert "Invalid service name" in error(
        api.post(post, params={"name": "-bad"}, json={"EXECUTE_CODE": ECHO}), 400
    )
    assert "__main__.py" in error(
        api.post(post, params={"name": "nomain"}, json={"EXECUTE_CODE": NO_MAIN}), 400
    )
    missing = api.post(post, params={"name": "nowhere"}, json={"EXECUTE_CODE": "/no/such/dir"})
    assert "does not exist" in error(missing, 400)
    assert "not found" in error(
        api.post("/api/projects/nope/services", params={"name": "x1"}, json={"EXECUTE_CODE": ECHO}),
        404,
    )
    assert "EXECUTE_CODE" in error(api.post(post, params={"name": "empty"}, json={}), 400)
    msg = error(api.post(post, params={"image": "nginx:latest", "name": "web"}), 400)
    assert "docker" in msg.lower()
    deploy(api, "demo", "twice")
    assert "already exists" in error(
        api.post(post, params={"name": "twice"}, json={"EXECUTE_CODE": ECHO}), 409
    )
    assert "not found" in error(api.get("/api/projects/demo/services/ghost"), 404).lower()
    assert "logs" not in error(api.get("/api/projects/demo/services/ghost/logs"), 404)
    assert error(api.put(f"{post}/x-spec", json={"code": ECHO, "ports": [70000]}), 400)
    assert error(
        api.put(f"{post}/x-spec", json={"code": ECHO, "resources": {"memory": "lots"}}), 400
    )


def test_lab_killed_and_restarted_keeps_exactly_one_copy(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    try:
        with lab.client() as api:
            api.post("/api/projects", json={"name": "demo"})
            deploy(api, "demo", "survivor")
            wait_running(api, "demo", "survivor")
            before = service_pids(data_dir, "demo--survivor")
            assert len(before) == 1
        lab.stop(signal.SIGKILL)
        # The service outlives the lab...
        assert os.path.exists(f"/proc/{before[0]}")
        lab.start()
        with lab.client() as api:
            wait_running(api, "demo", "survivor")
            assert proxied(api, "demo", "survivor").text == "ok"
            # ...and is adopted, not started a second time.
            assert service_pids(data_dir, "demo--survivor") == before
    finally:
        lab.stop()
        stop_local_services(data_dir)
