"""`servicelab serve` and replicas: SQLite refuses a second process with a clear message,
and `--workers N` on PostgreSQL runs N lab processes on one port, one of them leading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import _drop_postgres_database, _fresh_postgres_database
from .labtools import ADMIN_PASSWORD, ROOT, LabProcess, free_port, wait_until


def serve(data_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "SERVICELAB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SERVICELAB_DATA_DIR": str(data_dir),
        "SERVICELAB_RUNTIME": "local",
        "SERVICELAB_HOST": "127.0.0.1",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "servicelab", "serve", *args],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_second_process_on_a_sqlite_lab_is_refused(lab_process: LabProcess) -> None:
    second = serve(lab_process.data_dir, SERVICELAB_PORT=str(free_port()))
    output, _ = second.communicate(timeout=120)
    assert second.returncode != 0
    assert f"pid {lab_process.process.pid}" in output  # type: ignore[union-attr]
    assert "SQLite supports one lab process" in output
    assert "SERVICELAB_DATABASE_URL" in output
    # The first lab is unharmed.
    assert httpx.get(f"{lab_process.url}/healthz", timeout=10).status_code == 200


def test_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    process = serve(tmp_path / "data", "--workers", "2", SERVICELAB_PORT=str(free_port()))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "--workers needs PostgreSQL" in output


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    url, name = _fresh_postgres_database(postgres_server_url)
    yield url
    _drop_postgres_database(postgres_server_url, name)


@pytest.mark.postgres
def test_workers_share_one_port_and_one_leads(tmp_path: Path, postgres_url: str) -> None:
    port = free_port()
    process = serve(
        tmp_path / "data",
        "--workers",
        "2",
        SERVICELAB_PORT=str(port),
        SERVICELAB_DATABASE_URL=postgres_url,
    )
    seen: set[bool] = set()

    def both_answer() -> bool:
        # A new connection each time: the kernel spreads them over the workers.
        with httpx.Client(timeout=5) as client:
            seen.add(bool(client.get(f"http://127.0.0.1:{port}/healthz").json()["data"]["leader"]))
        return seen == {True, False}

    try:
        wait_until(both_answer, timeout=180, interval=0.1, what="a leader and a follower")
        token = httpx.get(
            f"http://127.0.0.1:{port}/api/auth/login", auth=("admin", ADMIN_PASSWORD), timeout=30
        )
        assert token.status_code == 200, token.text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert output.count("servicelab is starting on") == 1, output  # the parent only
