"""Fixtures: a lab in-process (FastAPI TestClient) or as a real server, on SQLite or PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from servicelab.app import create_app
from servicelab.config import Settings

from .dockertools import set_up_engine
from .labtools import ADMIN_PASSWORD, PLANES, LabProcess, deploy, plane_lab, stop_local_services


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("SERVICELAB_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("SERVICELAB_TEST_POSTGRES_URL is not set: run the suite with `make test`.")
        pytest.skip("no PostgreSQL server: run the suite with `make test`")
    return url


def _fresh_postgres_database(server_url: str) -> tuple[str, str]:
    import psycopg

    name = f"servicelab_test_{uuid.uuid4().hex[:12]}"
    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}", name


def _drop_postgres_database(server_url: str, name: str) -> None:
    import psycopg

    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each API test runs on both databases the lab supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lab.db'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    url, name = _fresh_postgres_database(server_url)
    yield url
    _drop_postgres_database(server_url, name)


@dataclass
class Lab:
    """An in-process lab: the real app and database, driven through Starlette's TestClient."""

    client: TestClient
    settings: Settings
    admin_token: str

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def get(self, url: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.get(url, headers=self.headers(token), **kw)

    def post(self, url: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.post(url, headers=self.headers(token), **kw)

    def put(self, url: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.put(url, headers=self.headers(token), **kw)

    def delete(self, url: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.delete(url, headers=self.headers(token), **kw)

    def create_user(self, name: str, password: str = "password-123", admin: bool = False) -> str:
        """Create a user and return a session token for it."""
        r = self.post(
            "/api/auth/users", json={"username": name, "password": password, "admin": admin}
        )
        assert r.status_code == 201, r.text
        r = self.client.get("/api/auth/login", auth=(name, password))
        assert r.status_code == 200, r.text
        self.client.cookies.clear()
        return str(r.json()["data"])

    def create_project(self, name: str, token: str | None = None) -> dict:
        r = self.post("/api/projects", token, json={"name": name})
        assert r.status_code == 201, r.text
        return dict(r.json()["data"])


def make_settings(data_dir: Path, database_url: str = "", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "admin_password": ADMIN_PASSWORD,
        "runtime": "local",
        "reconcile_interval": 0.3,
    }
    values.update(overrides)
    return Settings(**values)


def open_lab(settings: Settings) -> Iterator[Lab]:
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.get("/api/auth/login", auth=("admin", ADMIN_PASSWORD))
        assert r.status_code == 200, r.text
        client.cookies.clear()
        yield Lab(client, settings, str(r.json()["data"]))


@pytest.fixture
def lab(tmp_path: Path, database_url: str) -> Iterator[Lab]:
    """An in-process lab, once on SQLite and once on PostgreSQL."""
    yield from open_lab(make_settings(tmp_path / "data", database_url))


@pytest.fixture
def sqlite_lab(tmp_path: Path) -> Iterator[Lab]:
    """An in-process lab on SQLite only, for tests whose subject is not the database."""
    yield from open_lab(make_settings(tmp_path / "data"))
    stop_local_services(tmp_path / "data")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A client for a Docker engine with servicelab's images, set up once per session."""
    client = set_up_engine()
    yield client
    client.close()


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[LabProcess]:
    """A real `servicelab serve` in a subprocess, on SQLite, with the local runtime."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    yield lab
    lab.stop()
    stop_local_services(data_dir)


def _proxy_lab(tmp_path_factory: pytest.TempPathFactory, plane: str) -> Iterator[LabProcess]:
    with plane_lab(tmp_path_factory, plane, "proxy-lab") as lab:
        with lab.client() as api:
            for project in ("alpha", "beta"):
                assert api.post("/api/projects", json={"name": project}).status_code == 201
            deploy(api, "alpha", "echo")
        yield lab


@pytest.fixture(scope="session")
def embedded_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    yield from _proxy_lab(tmp_path_factory, "embedded")


@pytest.fixture(scope="session")
def nginx_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    yield from _proxy_lab(tmp_path_factory, "nginx")


@pytest.fixture(scope="module", params=PLANES)
def proxy_lab(request: pytest.FixtureRequest) -> LabProcess:
    """A real lab on each proxy plane (`embedded_lab`, `nginx_lab`): projects `alpha`, with
    the echo service `echo` running, and `beta`. One per plane for the whole session,
    shared by the proxy's test modules (test_proxy_lab, test_proxy_nginx, the security
    tests of the proxy): each adds users, projects and services of its own names."""
    lab: LabProcess = request.getfixturevalue(f"{request.param}_lab")
    return lab


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under `make test` every prerequisite is installed, so a skipped test is a failure:
    a skip must never be counted as a pass."""
    if not os.environ.get("SERVICELAB_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            reporter.write_line(f"SKIPPED (not allowed under make test): {report.nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
