"""What the security tests share: a victim, an attacker with an ordinary account, and the
hostile service's report (see tests/services/hostile-code)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..labtools import ROOT, LabProcess, login, wait_until

SERVICES = ROOT / "tests" / "services"
HOSTILE = SERVICES / "hostile-code"
ECHO = SERVICES / "echo-service"
SECRET_DATA = "victim's private value"


@dataclass
class Victim:
    """A project of someone else, with a service that keeps a value in its /data and a
    file in the project's data store."""

    project: str
    service: str
    file_key: str


def deploy(api: httpx.Client, project: str, name: str, code: str, **env: str) -> dict:
    r = api.post(
        f"/api/projects/{project}/services",
        params={"name": name},
        json={"EXECUTE_CODE": code, **env},
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


def wait_running(api: httpx.Client, project: str, name: str, timeout: float = 180) -> dict:
    def running() -> dict | None:
        r = api.get(f"/api/projects/{project}/services/{name}")
        data = r.json()["data"]
        assert data["status"] != "failed", data
        return data if data["status"] == "running" else None

    return wait_until(running, timeout=timeout, interval=0.2, what=f"{name} running")


def proxied(api: httpx.Client, project: str, name: str, path: str = "") -> httpx.Response:
    return api.get(f"/api/projects/{project}/services/{name}/8091/{path}", timeout=60)


def set_up_victim(lab: LabProcess, code: str = str(ECHO)) -> Victim:
    """As the admin: a project `victim` with an echo service holding a value in /data."""
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "victim"}).status_code == 201
        deploy(api, "victim", "vault", code)
        wait_running(api, "victim", "vault")
        r = api.post("/api/projects/victim/services/vault/8091/data", content=SECRET_DATA)
        assert r.status_code == 200, r.text
        r = api.post(
            "/api/projects/victim/files/upload",
            params={"dataType": "datasets", "fileName": "private.csv"},
            files={"file": ("private.csv", b"secret,rows\n")},
        )
        assert r.status_code in (200, 201), r.text
        key = r.json()["data"]
    return Victim("victim", "vault", key if isinstance(key, str) else key["key"])


def member_token(lab: LabProcess, name: str = "mallory") -> str:
    """An ordinary account (not an admin) with a project of its own, `attack`."""
    with lab.client() as api:
        r = api.post(
            "/api/auth/users", json={"username": name, "password": "mallory-pw-1", "admin": False}
        )
        assert r.status_code == 201, r.text
    token = login(lab.url, name, "mallory-pw-1")
    with lab.client(token) as api:
        assert api.post("/api/projects", json={"name": "attack"}).status_code == 201
    return token


def run_hostile(lab: LabProcess, token: str, code: str, targets: dict[str, Any]) -> dict:
    """Deploy the hostile service as the member, run its attacks, return its report."""
    with lab.client(token) as api:
        deploy(api, "attack", "hostile", code, HOSTILE_TARGETS=json.dumps(targets))
        wait_running(api, "attack", "hostile")
        r = proxied(api, "attack", "hostile", "attack")
        assert r.status_code == 200, r.text
        return dict(r.json())


def assert_all_refused(report: dict, expected: set[str]) -> None:
    """Every attempt of `expected` was refused, and the controls worked."""
    attacks = report["attacks"]
    assert set(attacks) == expected, sorted(attacks)
    succeeded = {n: a for n, a in attacks.items() if not a["refused"]}
    assert succeeded == {}, json.dumps(succeeded, indent=1)
    assert report["controls"]["own_data_written"] is True
    assert report["controls"]["own_code_read"] is True


def lab_targets(lab: LabProcess, victim: Victim) -> dict[str, Any]:
    """What of the lab's own data the hostile code goes for, on every runtime."""
    data_dir = lab.data_dir
    return {
        "database": str(data_dir / "servicelab.db"),
        "secret_key": str(data_dir / "secret_key"),
        "lab_data_dir": str(data_dir),
        "other_project_file": project_file(data_dir, victim),
    }


def hostile_gets_nothing(lab: LabProcess, targets: dict[str, Any]) -> dict:
    """As an ordinary member: deploy the hostile code against `targets`; every attack
    class is refused, and both it and the victim still serve. Its report."""
    token = member_token(lab)
    report = run_hostile(lab, token, str(HOSTILE), targets)
    assert_all_refused(report, ATTACK_CLASSES)
    assert not (HOSTILE / "hostile-was-here").exists()
    with lab.client(token) as api:
        assert proxied(api, "attack", "hostile").text == "ok"
    with lab.client() as api:
        assert proxied(api, "victim", "vault", "data").text == SECRET_DATA
    return report


ATTACK_CLASSES = {
    "read_database",
    "write_database",
    "read_secret_key",
    "list_lab_data_dir",
    "read_other_project_file",
    "read_other_service_data",
    "read_other_service_environ",
    "read_other_pid_environ",
    "signal_other_service",
    "write_outside_data",
    "connect_other_service_port",
    "become_root",
}


def project_file(data_dir: Path, victim: Victim) -> str:
    """The path of the victim's uploaded file in the lab's data store."""
    files = sorted((data_dir / "files" / victim.project).rglob("private.csv*"))
    data = [f for f in files if not f.name.endswith(".json")]
    assert data, files
    return str(data[0])
