"""Attacks by an ordinary member on a real lab, each one a hole that was found and fixed.

One lab serves every test (module scope): `mallory` is a member of `mine` only.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ..labtools import LabProcess, login

PASSWORD = "mallory-pw-1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("attacks") / "data"
    started = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    with started.client() as api:
        assert api.post("/api/projects", json={"name": "mine"}).status_code == 201
        r = api.post("/api/auth/users", json={"username": "mallory", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert api.post("/api/auth/users/mallory/projects/mine").status_code == 200
    yield started
    started.stop()


@pytest.fixture(scope="module")
def mallory(lab: LabProcess) -> str:
    return login(lab.url, "mallory", PASSWORD)


def test_deeply_nested_json_log_in_is_a_400_not_a_500(lab: LabProcess) -> None:
    """Anyone (no account needed) could make the log-in route raise RecursionError."""
    body = b'{"username": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(
        f"{lab.url}/api/auth/login",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert "JSON" in r.json()["metadata"]["message"]
