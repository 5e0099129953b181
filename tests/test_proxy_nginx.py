"""What only the nginx data plane promises (everything both planes promise is in
test_proxy_lab.py, test_service_origins.py and the proxy's security tests, run on both):
routes from the route table, the lab's auth endpoint closed to clients, and connections
that outlive a restart of the lab."""

from __future__ import annotations

import contextlib
import http.client
from pathlib import Path

import httpx
import pytest

from .labtools import LabProcess, deploy, wait_until

PREFIX = "/api/projects/alpha/services/echo/8091"


@pytest.fixture(scope="module")
def lab(nginx_lab: LabProcess) -> LabProcess:
    """The nginx plane's proxy lab, shared with the other proxy tests (see conftest.py)."""
    return nginx_lab


def routes(lab: LabProcess) -> str:
    return (lab.data_dir / "nginx" / "routes.conf").read_text()


def workers(lab: LabProcess) -> dict[int, str]:
    """nginx's worker processes and their titles."""
    master = int((lab.data_dir / "nginx" / "nginx.pid").read_text().split()[0])
    found = {}
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        with contextlib.suppress(OSError):
            found[int(child)] = Path(f"/proc/{child}/cmdline").read_text()
    return found


def test_routes_follow_the_route_table(lab: LabProcess) -> None:
    # The lab is shared: other tests' services may have routes too.
    before = routes(lab).count("upstream sl_")
    with lab.client() as api:
        deploy(api, "alpha", "second")
        # Its address becomes a keep-alive upstream of nginx's shortly after it runs: the
        # lab checks the route table five times a second.
        wait_until(lambda: routes(lab).count("upstream sl_") == before + 1, timeout=5, what="route")
        assert api.get("/api/projects/alpha/services/second/8091/").text == "ok"
        serving = set(workers(lab))
        assert api.delete("/api/projects/alpha/services/second").status_code == 200
    wait_until(lambda: routes(lab).count("upstream sl_") == before, timeout=5, what="route removed")

    # The change is applied by a graceful reload: new workers, the old ones finish.
    def reloaded() -> bool:
        now = workers(lab)
        return not (serving & set(now)) and not any("shutting" in t for t in now.values())

    wait_until(reloaded, timeout=30, what="nginx reloaded")


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
    # A worker retiring after an earlier route change (the lab is shared) closes its idle
    # keep-alive connections when it is done: the connection must go to a current one.
    wait_until(
        lambda: not any("shutting" in title for title in workers(lab).values()),
        timeout=30,
        what="no nginx worker shutting down",
    )
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
