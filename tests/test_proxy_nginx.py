"""What only the nginx data plane promises (everything both planes promise is in
test_proxy_lab.py and test_service_origins.py, run on both): routes from the route table,
forged headers removed by pattern before anything sees them, the lab's auth endpoint
closed to clients, and connections that outlive a restart of the lab."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .labtools import ROOT, LabProcess, lab_env, stop_local_services, stop_nginx, wait_until

ECHO = str(ROOT / "tests" / "services" / "echo-service")
PREFIX = "/api/projects/alpha/services/echo/8091"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("nginx-lab") / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env=lab_env("nginx")).start()
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "alpha"}).status_code == 201
        r = api.post(
            "/api/projects/alpha/services", params={"name": "echo"}, json={"EXECUTE_CODE": ECHO}
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: (
                api.get("/api/projects/alpha/services/echo").json()["data"]["status"] == "running"
            ),
            timeout=60,
            what="echo running",
        )
    yield lab
    lab.stop()
    stop_nginx(data_dir)
    stop_local_services(data_dir)


def routes(lab: LabProcess) -> str:
    return (lab.data_dir / "nginx" / "routes.conf").read_text()


def test_routes_follow_the_route_table(lab: LabProcess) -> None:
    with lab.client() as api:
        r = api.post(
            "/api/projects/alpha/services", params={"name": "second"}, json={"EXECUTE_CODE": ECHO}
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: (
                api.get("/api/projects/alpha/services/second").json()["data"]["status"] == "running"
            ),
            timeout=60,
            what="second running",
        )
        # Its address becomes a keep-alive upstream of nginx's shortly after it runs: the
        # lab checks the route table five times a second.
        wait_until(lambda: routes(lab).count("upstream sl_") == 2, timeout=5, what="route")
        assert routes(lab).count("upstream sl_") == 2
        assert api.get("/api/projects/alpha/services/second/8091/").text == "ok"
        assert api.delete("/api/projects/alpha/services/second").status_code == 200
    wait_until(lambda: routes(lab).count("upstream sl_") == 1, timeout=5, what="route removed")


def test_forged_headers_are_removed_by_pattern(lab: LabProcess) -> None:
    forged = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Anything": "forged",
        "X-Lab-User": "mallory",
        "X-Lab-Role": "admin",
        "X-Real-IP": "6.6.6.6",
        "Forwarded": "for=6.6.6.6",
        "X-Client-IP": "6.6.6.6",
        "True-Client-IP": "6.6.6.6",
        "X-Original-URL": "/admin",
        "X-Rewrite-URL": "/admin",
        "X-Lab-Admin": "true",
        "X_Lab_User": "mallory",
        "X-Sl-User": "mallory",
    }
    r = httpx.get(
        f"{lab.url}{PREFIX}/headers",
        headers={"Authorization": f"Bearer {lab.admin_token}", **forged},
    )
    assert r.status_code == 200
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert "6.6.6.6" not in json.dumps(seen) and "mallory" not in json.dumps(seen)
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-lab-user"] == "admin"
    for name in (h.lower() for h in forged):
        if name not in ("x-forwarded-for", "x-lab-user"):
            assert name not in seen, name


def test_the_auth_endpoint_is_nginx_s_only(lab: LabProcess) -> None:
    auth = {"Authorization": f"Bearer {lab.admin_token}"}
    r = httpx.get(f"{lab.url}/_servicelab/nginx-auth", headers=auth)
    assert r.status_code == 404
    r = httpx.get(
        f"{lab.url}/_servicelab/nginx-auth",
        headers={**auth, "X-Sl-Key": "guess", "X-Sl-Uri": f"{PREFIX}/"},
    )
    assert r.status_code == 404
    assert "x-sl-upstream" not in r.headers


def test_a_lab_restart_keeps_the_connections_nginx_holds(lab: LabProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=30)
    auth = {"Authorization": f"Bearer {lab.admin_token}"}
    conn.request("GET", f"{PREFIX}/", headers=auth)
    first = conn.getresponse()
    assert first.status == 200 and first.read() == b"ok"
    sock = conn.sock
    lab.stop()
    assert Path(lab.data_dir / "nginx" / "nginx.pid").exists()
    lab.start()
    # The same TCP connection to the public port serves the next request.
    conn.request("GET", f"{PREFIX}/", headers=auth)
    again = conn.getresponse()
    assert conn.sock is sock
    assert again.status == 200 and again.read() == b"ok"
    conn.close()
