"""Every way in to a deploy checks the same policy (issue 26, item 2): on a lab whose local
runtime has no sandbox only admins deploy, by POST, PUT, ML Lab's deploy and the models
route alike; and a member's `update=true` on the models route replaces nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Lab, make_settings, open_lab
from ..labtools import stop_local_services
from ..modeltools import PYTHON_MODEL, zip_of
from .attack import ECHO

PROJECT = "proj1"
SERVICES = f"/api/projects/{PROJECT}/services"
MODELS = f"/api/projects/{PROJECT}/files/models/deploy"


@pytest.fixture
def unsandboxed(tmp_path: Path) -> Iterator[tuple[Lab, str, Path]]:
    """A lab without the sandbox; a member of proj1 (their token); code below the roots;
    a Python model (a module that runs code at import) in proj1's data."""
    roots = tmp_path / "roots"
    shutil.copytree(ECHO, roots / "ok")
    settings = make_settings(tmp_path / "data", local_sandbox="off", code_roots=str(roots))
    for lab in open_lab(settings):
        token = lab.create_user("member")
        lab.create_project(PROJECT)
        assert lab.post(f"/api/auth/users/member/projects/{PROJECT}").status_code in (200, 201)
        r = lab.post(
            f"/api/projects/{PROJECT}/files/upload",
            token,
            params={"dataType": "model", "fileName": "summer.zip"},
            files={"file": ("summer.zip", zip_of({"summer.py": PYTHON_MODEL}))},
        )
        assert r.status_code in (200, 201), r.text
        yield lab, token, roots / "ok"
    stop_local_services(tmp_path / "data")


def refused(r: object) -> bool:
    status = r.status_code  # type: ignore[attr-defined]
    return status == 403 and "Only admins may deploy" in r.json()["errors"]["message"]  # type: ignore[attr-defined]


def test_every_entry_point_refuses_a_member(unsandboxed: tuple[Lab, str, Path]) -> None:
    lab, token, code = unsandboxed
    attempts = {
        "POST": lab.post(
            SERVICES, token, params={"name": "mem1"}, json={"EXECUTE_CODE": str(code)}
        ),
        "PUT": lab.put(f"{SERVICES}/mem2", token, json={"code": str(code)}),
        "models": lab.post(MODELS, token, params={"fileKey": "models/summer.zip", "name": "mem3"}),
    }
    for route, r in attempts.items():
        assert refused(r), (route, r.status_code, r.text)
    names = [s["name"] for s in lab.get(SERVICES).json()["data"]]
    assert not {"mem1", "mem2", "mem3"} & set(names)


def test_a_member_cannot_replace_an_admins_service_by_the_models_route(
    unsandboxed: tuple[Lab, str, Path],
) -> None:
    lab, token, _ = unsandboxed
    params = {"fileKey": "models/summer.zip", "name": "summer"}
    r = lab.post(MODELS, params=params)  # the admin
    assert r.status_code == 201, r.text
    before = r.json()["data"]
    r = lab.post(MODELS, token, params={**params, "update": "true"}, json={"MARK": "member"})
    assert refused(r), r.text
    after = lab.get(f"{SERVICES}/summer").json()["data"]
    assert after["modifiedAt"] == before["modifiedAt"]
    assert "MARK" not in after["configuration"]


@pytest.fixture
def members_deploy(tmp_path: Path) -> Iterator[tuple[Lab, str, Path]]:
    """A lab on which members deploy (unsandboxed, allowed by the operator: what is
    checked here is who may change whose service, not isolation)."""
    roots = tmp_path / "roots"
    shutil.copytree(ECHO, roots / "ok")
    settings = make_settings(
        tmp_path / "data",
        local_sandbox="off",
        allow_unsandboxed_members=True,
        code_roots=str(roots),
    )
    for lab in open_lab(settings):
        token = lab.create_user("member")
        lab.create_project(PROJECT)
        assert lab.post(f"/api/auth/users/member/projects/{PROJECT}").status_code in (200, 201)
        yield lab, token, roots / "ok"
    stop_local_services(tmp_path / "data")


def test_a_member_cannot_take_over_another_users_service(
    members_deploy: tuple[Lab, str, Path],
) -> None:
    """Held-out attack pass: a member PUT her own code into the admin's service, which then
    ran with the admin's secrets and token and outlived her removal."""
    lab, token, code = members_deploy
    r = lab.post(
        SERVICES, params={"name": "admsec"}, json={"EXECUTE_CODE": str(code), "DB_PASSWORD": "s3"}
    )
    assert r.status_code == 201, r.text
    before = r.json()["data"]
    r = lab.put(f"{SERVICES}/admsec", token, json={"code": str(code), "env": {"X": "1"}})
    assert r.status_code == 403, r.text
    message = r.json()["errors"]["message"]
    assert "deployed by 'admin'" in message and "owner or an admin" in message
    after = lab.get(f"{SERVICES}/admsec").json()["data"]
    assert after["modifiedAt"] == before["modifiedAt"] and "X" not in after["configuration"]
    # Her own service stays hers to change; the admin may change any.
    r = lab.post(SERVICES, token, params={"name": "mine"}, json={"EXECUTE_CODE": str(code)})
    assert r.status_code == 201, r.text
    assert lab.put(f"{SERVICES}/mine", token, json={"env": {"Y": "2"}}).status_code == 200
    assert lab.put(f"{SERVICES}/mine", json={"env": {"Z": "3"}}).status_code == 200
