"""Bad input gets a 4xx that says what to fix: numbers out of bounds, specs no runtime can
start, health-check paths that would make the prober call someone else."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from servicelab.api.errors import install_error_handlers
from servicelab.runtimes.base import Address
from servicelab.services.health import probe_url

from .conftest import Lab
from .labtools import ROOT

ECHO = str(ROOT / "tests" / "services" / "echo-service")


def error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    message = response.json()["errors"]["message"]
    assert message and "Traceback" not in message
    return str(message)


@pytest.fixture
def bounded(sqlite_lab: Lab) -> Lab:
    sqlite_lab.create_project("bounds")
    return sqlite_lab


def test_numbers_out_of_bounds_are_4xx_with_a_message(bounded: Lab) -> None:
    lab = bounded
    # Both routes that create tokens.
    r = lab.post("/api/auth/tokens", json={"kind": "user", "name": "t", "expiresIn": 1e308})
    assert "expiresIn" in error(r, 400)
    r = lab.post("/api/projects/bounds/tokens", json={"name": "t", "expiresIn": 1e308})
    assert "expiresIn" in error(r, 400)
    base = "/api/projects/bounds/services"
    for since in ("1e20", "inf", "99999999999999d", "-1", "nan"):
        assert "since" in error(lab.get(f"{base}/nothing/logs", params={"since": since}), 400)
    assert "tail" in error(lab.get(f"{base}/nothing/logs", params={"tail": "1e25"}), 400)
    assert "tail" in error(lab.get(f"{base}/nothing/logs", params={"tail": 10**25}), 400)
    huge = "1" + "0" * 400
    for memory in (huge, int(huge)):
        spec = {"code": ECHO, "resources": {"memory": memory}}
        assert "memory" in error(lab.put(f"{base}/hog", json=spec), 400)
    for bad in (
        {"resources": {"cpus": 1e308}},
        {"resources": {"gpus": 10**20}},
        {"health": {"interval": 1e308}},
        {"health": {"retries": 10**30}},
        {"ports": [70000]},
        {"replicas": 10**12},
    ):
        assert error(lab.put(f"{base}/big", json={"code": ECHO, **bad}), 400)


def test_specs_no_runtime_can_start_are_refused_at_deploy(bounded: Lab) -> None:
    lab = bounded
    base = "/api/projects/bounds/services"
    cases = [
        ({"env": {"A": "x\u0000y"}}, "NUL"),
        ({"env": {"A=B": "x"}}, "A=B"),
        ({"env": {"": "x"}}, "name"),
        ({"env": {"PORT": "99999"}}, "PORT"),
        ({"env": {"PORT": "eighty"}}, "PORT"),
    ]
    for extra, hint in cases:
        assert hint in error(lab.put(f"{base}/bad", json={"code": ECHO, **extra}), 400)
        r = lab.post(base, params={"name": "bad"}, json={"EXECUTE_CODE": ECHO, **extra["env"]})
        assert hint in error(r, 400)
    assert lab.get(base).json()["data"] == []


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_host() -> Iterator[str]:
    """Someone else's server on this machine, which records every request it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_health_check_path_is_a_path_on_the_service_only(bounded: Lab, other_host: str) -> None:
    lab = bounded
    base = "/api/projects/bounds/services"
    for path in (
        f"@{other_host}/x",
        f"//{other_host}/x",
        f"http://{other_host}/x",
        "health",
        "/a b",
        "/x\\@evil",
    ):
        spec = {"code": ECHO, "health": {"path": path}}
        assert "path" in error(lab.put(f"{base}/probed", json=spec), 400)
    assert lab.get(base).json()["data"] == []
    assert _Recorder.hits == []
    # The prober builds its URL from the service's address only, whatever a stored row says.
    service = Address("127.0.0.1", 8091)
    host, port = other_host.split(":")
    for path in (f"@{other_host}/x", f"//{other_host}/x", f":{port}@{host}/x"):
        assert probe_url(service, path) is None
    good = probe_url(service, "/health?deep=1")
    assert good is not None and (good.host, good.port) == ("127.0.0.1", 8091)


def test_an_unexpected_error_closes_the_connection_honestly() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise ZeroDivisionError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.headers["connection"] == "close"
    assert "Traceback" not in r.text and "a bug" not in r.text
