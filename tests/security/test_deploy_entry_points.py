"""Every way in to a deploy checks the same policy (issue 26, item 2): on a lab whose local
runtime has no sandbox only admins deploy, by POST, PUT, ML Lab's deploy and the models
route alike (and the web UI's form, the CLI and a follower, issue 28); and a member's
`update=true` on the models route replaces nothing."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from servicelab.auth import Forbidden, Identity
from servicelab.cli import app as cli_app
from servicelab.db import Project
from servicelab.deploy import Deployer
from servicelab.errors import NotFound
from servicelab.spec import InvalidSpec, ServiceSpec

from ..browsertools import chromium
from ..conftest import (
    Lab,
    _drop_postgres_database,
    _fresh_postgres_database,
    make_settings,
    open_lab,
)
from ..labtools import LabProcess, login, stop_local_services
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
        # ML Lab's deploy of a workspace image with EXECUTE_CODE: code run by the lab.
        "POST workspace": lab.post(
            SERVICES,
            token,
            params={"image": "mltooling/ml-workspace:latest", "name": "mem4"},
            json={"EXECUTE_CODE": str(code)},
        ),
        "models update": lab.post(
            MODELS,
            token,
            params={"fileKey": "models/summer.zip", "name": "mem5", "update": "true"},
        ),
    }
    for route, r in attempts.items():
        assert refused(r), (route, r.status_code, r.text)
    names = [s["name"] for s in lab.get(SERVICES).json()["data"]]
    assert not {"mem1", "mem2", "mem3", "mem4", "mem5"} & set(names)


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


# -- the CLI and a follower: real lab processes -------------------------------------------

UNSANDBOXED_ENV = {"SERVICELAB_RUNTIME": "local", "SERVICELAB_LOCAL_SANDBOX": "off"}
MEMBER_PASSWORD = "password-123"


def add_member(lab: LabProcess) -> str:
    """A member of proj1 (created if missing) on a real lab; their session token."""
    admin = {"Authorization": f"Bearer {lab.admin_token}"}
    r = httpx.post(f"{lab.url}/api/projects", headers=admin, json={"name": PROJECT}, timeout=30)
    assert r.status_code in (201, 409), r.text
    r = httpx.post(
        f"{lab.url}/api/auth/users",
        headers=admin,
        json={"username": "member", "password": MEMBER_PASSWORD},
        timeout=30,
    )
    assert r.status_code in (201, 409), r.text
    r = httpx.post(f"{lab.url}/api/auth/users/member/projects/{PROJECT}", headers=admin, timeout=30)
    assert r.status_code in (200, 201, 409), r.text
    return login(lab.url, "member", MEMBER_PASSWORD)


@pytest.fixture
def unsandboxed_process(tmp_path: Path) -> Iterator[LabProcess]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env=UNSANDBOXED_ENV).start(180)
    yield lab
    lab.stop()
    stop_local_services(data_dir)


def test_the_cli_deploy_command_refuses_a_member(
    unsandboxed_process: LabProcess, tmp_path: Path
) -> None:
    lab = unsandboxed_process
    add_member(lab)
    env = {"SERVICELAB_CONFIG": str(tmp_path / "config.json"), "COLUMNS": "200"}
    runner = CliRunner()
    login_result = runner.invoke(
        cli_app, ["login", lab.url, "--username", "member"], input=MEMBER_PASSWORD + "\n", env=env
    )
    assert login_result.exit_code == 0, login_result.stderr
    args = ["services", "deploy", "--code", str(ECHO), "--name", "mem6", "--project", PROJECT]
    result = runner.invoke(cli_app, args, env=env)
    assert result.exit_code == 3, (result.stdout, result.stderr)  # Exit.AUTH, as for any 403
    assert "Only admins may deploy" in result.stderr
    admin = {"Authorization": f"Bearer {lab.admin_token}"}
    listing = httpx.get(f"{lab.url}{SERVICES}", headers=admin, timeout=30).json()["data"]
    assert "mem6" not in {s["name"] for s in listing}


@pytest.mark.browser
def test_the_web_uis_deploy_form_refuses_a_member(unsandboxed_process: LabProcess) -> None:
    """The UI's form sends the JSON API's PUT: the member reads the refusal where they
    deployed, and nothing is created."""
    lab = unsandboxed_process
    add_member(lab)
    with chromium() as browser:
        context = browser.new_context(base_url=lab.url)
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"/login?next=/projects/{PROJECT}")
        page.fill("input[name=username]", "member")
        page.fill("input[name=password]", MEMBER_PASSWORD)
        page.click("button:has-text('Log in')")
        form = page.locator("#deploy-form")
        form.locator("input[name=code]").fill(str(ECHO))
        form.locator("input[name=name]").fill("mem7")
        form.locator("button:has-text('Deploy')").click()
        alert = page.locator("#flash [role=alert]")
        expect(alert).to_contain_text("Only admins may deploy", timeout=30_000)
        context.close()
    admin = {"Authorization": f"Bearer {lab.admin_token}"}
    listing = httpx.get(f"{lab.url}{SERVICES}", headers=admin, timeout=30).json()["data"]
    assert "mem7" not in {s["name"] for s in listing}


@pytest.mark.postgres
def test_a_follower_refuses_a_members_deploy_as_the_leader_does(
    postgres_server_url: str, tmp_path: Path
) -> None:
    """Two labs on one PostgreSQL: the deploy sent to the follower (which forwards its
    commands to the leader) meets the same pipeline, and the same 403."""
    url, name = _fresh_postgres_database(postgres_server_url)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {**UNSANDBOXED_ENV, "SERVICELAB_INSTANCE_ID": f"follow-{secrets.token_hex(4)}"}
    labs: list[LabProcess] = []
    try:
        for _ in range(2):
            labs.append(LabProcess(data_dir, database_url=url, env=env).start(180))
        token = add_member(labs[0])
        leaders = [
            httpx.get(f"{lab.url}/healthz", timeout=10).json()["data"]["leader"] for lab in labs
        ]
        assert sorted(leaders) == [False, True], leaders
        for lab in labs:  # the follower and, for comparison, the leader
            member = {"Authorization": f"Bearer {token}"}
            r = httpx.post(
                f"{lab.url}{SERVICES}",
                headers=member,
                params={"name": "mem7"},
                json={"EXECUTE_CODE": str(ECHO)},
                timeout=60,
            )
            assert refused(r), (lab.url, r.status_code, r.text)
        admin = {"Authorization": f"Bearer {labs[0].admin_token}"}
        listing = httpx.get(f"{labs[0].url}{SERVICES}", headers=admin, timeout=30).json()
        assert "mem7" not in {s["name"] for s in listing["data"]}
    finally:
        for lab in labs:
            lab.stop()
        stop_local_services(data_dir)
        _drop_postgres_database(postgres_server_url, name)


# -- the pipeline itself, without HTTP ----------------------------------------------------


@dataclass
class FakeRuntime:
    name: str = "local"
    isolates_code: bool = False
    isolation_note: str = "no sandbox here"


@dataclass
class FakeManager:
    """What the pipeline asks of a ServiceManager, recording the deploys it is handed."""

    runtime: FakeRuntime = field(default_factory=FakeRuntime)
    deployed: list[ServiceSpec] = field(default_factory=list)

    async def get(self, project: object, name: str) -> object:
        raise NotFound(name)

    async def deploy(self, project: object, spec: ServiceSpec, **_: object) -> tuple[str, bool]:
        self.deployed.append(spec)
        return spec.name, True


def identity(name: str, *, admin: bool) -> Identity:
    return Identity(f"t-{name}", "user", f"u-{name}", name, admin, None, None, None)


def test_the_domain_pipeline_refuses_a_member_without_http(tmp_path: Path) -> None:
    services = FakeManager()
    deployer = Deployer(
        services,  # type: ignore[arg-type]
        make_settings(tmp_path, local_sandbox="off"),
        files=None,  # type: ignore[arg-type]
        authority=None,  # type: ignore[arg-type]
    )
    project = Project(name=PROJECT)
    spec = ServiceSpec(project="", name="Mem8", code=str(ECHO))
    with pytest.raises(Forbidden, match="Only admins may deploy"):
        asyncio.run(
            deployer.deploy(identity("m", admin=False), project, spec, replace_existing=False)
        )
    assert services.deployed == []
    # A bad spec is refused first, in normalize's words, whoever sends it.
    bad = ServiceSpec(project="", name="mem8", code=str(ECHO), ports=[0])
    with pytest.raises(InvalidSpec, match="port must be a port number"):
        asyncio.run(
            deployer.deploy(identity("m", admin=False), project, bad, replace_existing=False)
        )
    # The admin's spec reaches the manager normalized.
    asyncio.run(
        deployer.deploy(identity("admin", admin=True), project, spec, replace_existing=False)
    )
    (handed,) = services.deployed
    assert (handed.project, handed.name, handed.ports) == (PROJECT, "mem8", [8091])
