"""Health that means something, and the route prefix kept everywhere a service is deployed.

One real lab (local runtime) for the module; its reconcile loop runs every 0.2 s so that
many probes happen while the tests poll.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .labtools import ADMIN_PASSWORD, ROOT, LabProcess, stop_local_services, wait_until
from .test_cli import Cli

PROBE_COUNTER = str(ROOT / "tests" / "services" / "probe-counter")
PROBE_AGENT = "servicelab-health-probe"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("health-lab") / "data"
    data_dir.mkdir()
    env = {"SERVICELAB_RUNTIME": "local", "SERVICELAB_RECONCILE_INTERVAL": "0.2"}
    started = LabProcess(data_dir, env=env).start()
    yield started
    started.stop()
    stop_local_services(data_dir)


@pytest.fixture(scope="module")
def api(lab: LabProcess) -> Iterator[httpx.Client]:
    with lab.client() as client:
        assert client.post("/api/projects", json={"name": "health"}).status_code == 201
        yield client


def service(api: httpx.Client, name: str) -> dict[str, Any]:
    r = api.get(f"/api/projects/health/services/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def put(api: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    r = api.put(f"/api/projects/health/services/{name}", json=spec)
    assert r.status_code in (200, 201), r.text
    return dict(r.json()["data"])


def wait_status(api: httpx.Client, name: str, status: str, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (s := service(api, name))["status"] == status and s,
        timeout=timeout,
        what=f"{name} {status}",
    )


def stats(api: httpx.Client, name: str) -> dict[str, Any]:
    r = api.get(f"/api/projects/health/services/{name}/8091/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_service_answering_404_on_its_root_is_unhealthy_and_the_reason_says_404(
    api: httpx.Client,
) -> None:
    put(
        api,
        "broken",
        {
            "code": PROBE_COUNTER,
            "env": {"ROOT_STATUS": "404"},
            "health": {"startPeriod": 2, "interval": 0.2},
        },
    )
    broken = wait_status(api, "broken", "unhealthy")
    assert broken["isHealthy"] is False
    assert "answered 404" in broken["reason"], broken["reason"]
    # A broken app is asked again no more often than its health interval: its log holds
    # far fewer probe lines than the reconcile passes that checked it.
    counted = stats(api, "broken")
    assert counted["requests"][PROBE_AGENT] <= counted["connections"]


def test_probes_of_a_healthy_service_do_not_fill_its_log(api: httpx.Client) -> None:
    put(api, "quiet", {"code": PROBE_COUNTER, "health": {"interval": 0.2}})
    wait_status(api, "quiet", "running")
    mine = 0

    def tcp_checks() -> int:
        nonlocal mine
        counted = stats(api, "quiet")
        mine += 1
        return counted["connections"] - sum(counted["requests"].values())

    # Connections that sent no request are the prober's TCP checks: wait for many.
    wait_until(lambda: tcp_checks() >= 10, timeout=60, what="10 TCP health checks")
    counted = stats(api, "quiet")
    http_probes = counted["requests"][PROBE_AGENT]
    assert 1 <= http_probes <= 2, counted
    logs = api.get("/api/projects/health/services/quiet/logs").json()["data"]
    assert logs.count(PROBE_AGENT) == http_probes


def test_kept_prefix_through_ml_labs_post_the_probe_and_lab_service_url(
    api: httpx.Client,
) -> None:
    r = api.post(
        "/api/projects/health/services",
        params={"name": "prefixed"},
        json={"EXECUTE_CODE": PROBE_COUNTER, "LAB_KEEP_PREFIX": "true", "UNDER_PREFIX": "1"},
    )
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    assert created["stripPrefix"] is False
    assert "LAB_KEEP_PREFIX" not in created["configuration"]
    url = "/api/projects/health/services/prefixed/8091/"
    assert created["configuration"]["LAB_SERVICE_URL"] == url
    # Healthy only if the probe asks for the prefixed path: the app serves nothing else.
    wait_status(api, "prefixed", "running")
    assert "connections" in stats(api, "prefixed")
    # An update that names only the environment keeps the kept prefix.
    updated = put(api, "prefixed", {"env": {"UNDER_PREFIX": "1", "ROOT_STATUS": "202"}})
    assert updated["stripPrefix"] is False
    assert updated["code"] == PROBE_COUNTER
    wait_status(api, "prefixed", "running")
    assert api.get(url).status_code == 202

    bad = api.post(
        "/api/projects/health/services",
        params={"name": "badflag"},
        json={"EXECUTE_CODE": PROBE_COUNTER, "LAB_KEEP_PREFIX": "maybe"},
    )
    assert bad.status_code == 400 and "LAB_KEEP_PREFIX" in bad.text


def test_cli_keep_prefix_and_update_keep_what_they_do_not_name(
    lab: LabProcess, tmp_path: Path
) -> None:
    cli = Cli(lab, tmp_path / "config.json")
    cli.ok("login", lab.url, "--username", "admin", input=ADMIN_PASSWORD + "\n")
    project = f"p{os.urandom(3).hex()}"
    cli.ok("projects", "create", project, "--use")
    code = "tests/services/probe-counter"
    first = cli.json(
        "services", "deploy", "--code", code, "-n", "kept", "--keep-prefix", "-e", "UNDER_PREFIX=1"
    )
    assert first["stripPrefix"] is False and first["status"] == "running"
    again = cli.json("services", "deploy", "--code", code, "-n", "kept", "--update")
    assert again["stripPrefix"] is False
    assert again["configuration"]["UNDER_PREFIX"] == "1"
    back = cli.json(
        "services",
        "deploy",
        "--code",
        code,
        "-n",
        "kept",
        "--update",
        "--strip-prefix",
        "-e",
        "UNDER_PREFIX=",
    )
    assert back["stripPrefix"] is True and back["status"] == "running"


@pytest.mark.parametrize("path", ["/_stcore/health", "/static/app-main.js", "/lab/api/x"])
def test_a_request_from_a_service_page_that_misses_the_prefix_names_the_fix(
    lab: LabProcess, path: str
) -> None:
    page = f"{lab.url}/api/projects/health/services/stream/8091/"
    with httpx.Client(base_url=lab.url) as browser:
        r = browser.get(path, headers={"Referer": page})
        plain = browser.get(path)
    assert r.status_code == 404
    message = r.json()["errors"]["message"]
    assert "'stream'" in message and "LAB_SERVICE_URL" in message and "--keep-prefix" in message
    assert plain.status_code == 404 and "LAB_SERVICE_URL" not in plain.text
