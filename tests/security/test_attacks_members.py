"""Attacks on what membership leaves behind (issue 26): a removed member's services, a
password changed with a script's token, and names that tell "not yours" from "absent".

One lab (local runtime, SQLite) serves the module; every test uses users and projects of
its own. Its services run unsandboxed with members allowed to deploy them: what is
attacked here is the lab's bookkeeping of tokens and members, the same on every runtime,
not the sandbox (tests/security/test_sandbox_*.py attack that).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from servicelab.auth import hash_secret
from servicelab.db import ApiToken, Database, utcnow

from ..browsertools import chromium
from ..conftest import _drop_postgres_database, _fresh_postgres_database
from ..labtools import (
    ADMIN_PASSWORD,
    ECHO,
    LabProcess,
    deploy,
    login,
    stop_local_services,
    wait_until,
)
from .attack import SERVICES, proxied

PASSWORD = "member-pw-1"
LAB_ENV = {
    "SERVICELAB_RUNTIME": "local",
    "SERVICELAB_LOCAL_SANDBOX": "off",
    "SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS": "true",
    # Members (and their services' tokens) may deploy the test services.
    "SERVICELAB_CODE_ROOTS": str(SERVICES),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("members-lab") / "data"
    data_dir.mkdir()
    process = LabProcess(data_dir, env=dict(LAB_ENV)).start()
    try:
        yield process
    finally:
        process.stop()
        stop_local_services(data_dir)


def add_user(lab: LabProcess, name: str, *projects: str) -> str:
    """A user (not an admin), member of `projects` (created by the admin when new); a
    session token from ML Lab's log-in."""
    with lab.client() as admin:
        r = admin.post("/api/auth/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for project in projects:
            admin.post("/api/projects", json={"name": project})
            r = admin.post(f"/api/auth/users/{name}/projects/{project}")
            assert r.status_code == 200, r.text
    return login(lab.url, name, PASSWORD)


def service_token(api: httpx.Client, project: str, name: str) -> str:
    """The LAB_API_TOKEN the service runs with, as the service itself shows it."""
    r = proxied(api, project, name, "env")
    assert r.status_code == 200, r.text
    return str(r.json()["LAB_API_TOKEN"])


def files_status(lab: LabProcess, token: str, project: str) -> int:
    with lab.client(token) as api:
        return api.get(f"/api/projects/{project}/files").status_code


def deploy_status(lab: LabProcess, token: str, project: str, name: str) -> int:
    with lab.client(token) as api:
        r = api.post(
            f"/api/projects/{project}/services", params={"name": name}, json={"EXECUTE_CODE": ECHO}
        )
        return r.status_code


def service(api: httpx.Client, project: str, name: str) -> dict:
    r = api.get(f"/api/projects/{project}/services/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def renewed_token(api: httpx.Client, project: str, name: str, old: str) -> str:
    """Poll until the service runs again with a token other than `old`; that token."""

    def new_token() -> str | None:
        if service(api, project, name)["status"] != "running":
            return None
        token = service_token(api, project, name)
        return token if token != old else None

    return wait_until(new_token, timeout=90, interval=0.2, what=f"{name} with a new token")


# -- a removed member's services --------------------------------------------------------


def test_removing_a_member_renews_the_tokens_of_what_they_left_running(lab: LabProcess) -> None:
    """Removed from a project, the member kept it through their service: its
    LAB_API_TOKEN (which the member can read, e.g. from their service's /env) still
    listed the project's files and deployed new services. Removal now revokes it at once
    and restarts the service with a new one, and so for what that token deployed."""
    leaver = add_user(lab, "leaver", "kept-b")
    with lab.client(leaver) as api:
        deploy(api, "kept-b", "left-behind")
        stolen = service_token(api, "kept-b", "left-behind")
    # While a member, her service's token deploys another service: hers as well.
    assert deploy_status(lab, stolen, "kept-b", "offspring") == 201
    with lab.client() as admin:
        wait_until(lambda: service(admin, "kept-b", "offspring")["status"] == "running", timeout=90)
        stolen_too = service_token(admin, "kept-b", "offspring")
        deploy(admin, "kept-b", "admins-own")
        admins_token = service_token(admin, "kept-b", "admins-own")
    assert files_status(lab, stolen, "kept-b") == 200

    with lab.client() as admin:
        r = admin.delete("/api/auth/users/leaver/projects/kept-b")
        assert r.status_code == 200, r.text
        # At once: no waiting for the restarts.
        for token in (stolen, stolen_too):
            assert files_status(lab, token, "kept-b") == 401
            assert deploy_status(lab, token, "kept-b", "after-removal") == 401
        # What her service deployed is hers too, and the answer names all of it.
        assert service(admin, "kept-b", "offspring")["createdBy"] == "leaver"
        message = r.json()["metadata"]["message"]
        assert "left-behind" in message and "offspring" in message and "renewed" in message
        # The services serve again, with tokens that work and that she never saw.
        for name, old in (("left-behind", stolen), ("offspring", stolen_too)):
            fresh = renewed_token(admin, "kept-b", name, old)
            assert files_status(lab, fresh, "kept-b") == 200
        # Nobody else's service was touched.
        assert service_token(admin, "kept-b", "admins-own") == admins_token
    assert files_status(lab, leaver, "kept-b") == 404


def test_the_admin_may_stop_a_removed_members_services_instead(lab: LabProcess) -> None:
    quitter = add_user(lab, "quitter", "kept-c")
    with lab.client(quitter) as api:
        deploy(api, "kept-c", "quitters")
        stolen = service_token(api, "kept-c", "quitters")
    with lab.client() as admin:
        r = admin.delete("/api/auth/users/quitter/projects/kept-c", params={"services": "stop"})
        assert r.status_code == 200, r.text
        assert files_status(lab, stolen, "kept-c") == 401
        assert "quitters" in r.json()["metadata"]["message"]
        stopped = service(admin, "kept-c", "quitters")
        assert stopped["status"] == "stopped" and stopped["desired"] == "stopped"
        assert proxied(admin, "kept-c", "quitters").status_code != 200
        # Started again by the admin, it gets a token of its own, not the old one.
        assert admin.post("/api/projects/kept-c/services/quitters/start").status_code == 200
        restarted = renewed_token(admin, "kept-c", "quitters", stolen)
        assert files_status(lab, restarted, "kept-c") == 200
    assert files_status(lab, stolen, "kept-c") == 401


def test_deleting_a_user_ends_what_they_left_running_in_every_project(lab: LabProcess) -> None:
    gone = add_user(lab, "gone", "kept-f")
    with lab.client(gone) as api:
        deploy(api, "kept-f", "orphan")
        stolen = service_token(api, "kept-f", "orphan")
    with lab.client() as admin:
        r = admin.delete("/api/auth/users/gone", params={"services": "stop"})
        assert r.status_code == 200, r.text
        assert files_status(lab, stolen, "kept-f") == 401
        assert "kept-f/orphan" in r.json()["metadata"]["message"]
        assert service(admin, "kept-f", "orphan")["status"] == "stopped"


def test_an_unknown_choice_for_the_services_is_a_400_that_changes_nothing(
    lab: LabProcess,
) -> None:
    stayer = add_user(lab, "stayer", "kept-d")
    with lab.client() as admin:
        r = admin.delete("/api/auth/users/stayer/projects/kept-d", params={"services": "keep"})
        assert r.status_code == 400, r.text
        message = r.json()["metadata"]["message"]
        assert "'renew'" in message and "'stop'" in message
    assert files_status(lab, stayer, "kept-d") == 200


@pytest.mark.browser
def test_the_admin_sees_a_members_services_and_chooses_before_removing(
    lab: LabProcess,
) -> None:
    """The page where an admin removes a member says what the member deployed there and
    offers the choice before anything is confirmed; the choice is what happens."""
    shown = add_user(lab, "shown", "kept-e")
    with lab.client(shown) as api:
        deploy(api, "kept-e", "shown-svc")
    asked: list[str] = []
    with chromium() as browser:
        page = browser.new_context(base_url=lab.url).new_page()
        page.set_default_timeout(15_000)
        page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
        page.goto("/login?next=/projects/kept-e")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button:has-text('Log in')")
        member = page.locator('li[data-member="shown"]')
        member.locator("summary").click()
        expect(member).to_contain_text("deployed 1 service here")
        expect(member).to_contain_text("shown-svc")
        member.locator('input[value="stop"]').check()
        member.locator("button:has-text('Remove shown')").click()
        expect(page.locator('li[data-member="shown"]')).to_have_count(0)
    assert len(asked) == 1 and "shown-svc" in asked[0]
    with lab.client() as admin:
        assert service(admin, "kept-e", "shown-svc")["status"] == "stopped"


# -- passwords ----------------------------------------------------------------------------


def password_get(lab: LabProcess, token: str, user: str, new: str) -> httpx.Response:
    """ML Lab's route: the new password in the query, the token in the header."""
    with lab.client(token) as api:
        return api.get(f"/api/auth/users/{user}/password", params={"password": new})


def can_log_in(lab: LabProcess, user: str, password: str) -> bool:
    r = httpx.get(f"{lab.url}/api/auth/login", auth=(user, password), timeout=30)
    return r.status_code == 200


def age(lab: LabProcess, token: str) -> None:
    """Make a session an hour old, as if its log-in was long ago."""
    db = Database(f"sqlite:///{lab.data_dir / 'servicelab.db'}")
    try:
        with db.session() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.secret_hash == hash_secret(token))
                .values(created_at=utcnow() - timedelta(hours=1))
            )
    finally:
        db.engine.dispose()


def test_a_user_token_alone_cannot_change_the_password(lab: LabProcess) -> None:
    """A leaked script token (slu_) set a new password with ML Lab's GET, which asks for
    no current password: the token became the account."""
    session = add_user(lab, "scripted")
    with lab.client(session) as api:
        user_token = api.get("/api/auth/users/scripted/token").json()["data"]
    assert user_token.startswith("slu_")
    r = password_get(lab, user_token, "scripted", "taken-over-1")
    assert r.status_code == 403, r.text
    assert "current password" in r.json()["metadata"]["message"]
    with lab.client(user_token) as api:
        r = api.put("/api/auth/users/scripted/password", json={"password": "taken-over-2"})
        assert r.status_code == 400, r.text
    assert can_log_in(lab, "scripted", PASSWORD)
    assert not can_log_in(lab, "scripted", "taken-over-1")
    # With the current password the token may (PUT), as the account's owner would.
    with lab.client(user_token) as api:
        change = {"password": "chosen-pw-2", "currentPassword": PASSWORD}
        assert api.put("/api/auth/users/scripted/password", json=change).status_code == 200
    assert can_log_in(lab, "scripted", "chosen-pw-2")


def test_ml_labs_client_logs_in_and_changes_the_password(lab: LabProcess) -> None:
    """ML Lab's generated client: GET /login with Basic credentials, then GET .../password
    with the token it got. That token is a fresh log-in session: it works."""
    add_user(lab, "mlclient")
    fresh = login(lab.url, "mlclient", PASSWORD)
    assert fresh.startswith("sls_")
    r = password_get(lab, fresh, "mlclient", "second-pw-2")
    assert r.status_code == 200, r.text
    assert can_log_in(lab, "mlclient", "second-pw-2")


def test_an_old_or_refreshed_session_alone_cannot_change_the_password(lab: LabProcess) -> None:
    """A session lasts days: one taken from a browser or a script's config long after
    its log-in must not become the account either, nor be refreshed into a new one."""
    old = add_user(lab, "sessioned")
    age(lab, old)
    r = password_get(lab, old, "sessioned", "taken-over-1")
    assert r.status_code == 403, r.text
    with lab.client(old) as api:
        refreshed = api.get("/api/auth/refresh").json()["data"]
    r = password_get(lab, refreshed, "sessioned", "taken-over-1")
    assert r.status_code == 403, r.text
    assert can_log_in(lab, "sessioned", PASSWORD)


def test_an_admin_token_alone_cannot_set_anothers_password(lab: LabProcess) -> None:
    add_user(lab, "victim-user")
    with lab.client() as admin:
        admin_token = admin.get("/api/auth/users/admin/token").json()["data"]
    r = password_get(lab, admin_token, "victim-user", "taken-over-1")
    assert r.status_code == 403, r.text
    with lab.client(admin_token) as api:
        r = api.put("/api/auth/users/victim-user/password", json={"password": "taken-over-2"})
        assert r.status_code == 403, r.text
        assert can_log_in(lab, "victim-user", PASSWORD)
        # With the admin's own password, or from a fresh log-in, the admin may.
        change = {"password": "reset-by-admin-1", "currentPassword": ADMIN_PASSWORD}
        r = api.put("/api/auth/users/victim-user/password", json=change)
        assert r.status_code == 200, r.text
    assert can_log_in(lab, "victim-user", "reset-by-admin-1")
    fresh_admin = login(lab.url, "admin", ADMIN_PASSWORD)
    assert password_get(lab, fresh_admin, "victim-user", "reset-by-admin-2").status_code == 200
    assert can_log_in(lab, "victim-user", "reset-by-admin-2")


# -- "absent" and "not yours" look the same --------------------------------------------------


def answer(lab: LabProcess, token: str, method: str, path: str, name: str) -> tuple:
    """Status, error type and message (the name replaced by `*`) of one request."""
    with lab.client(token) as api:
        kwargs: dict = {}
        if method in ("PUT", "POST") and "/tokens" in path:
            kwargs["json"] = {"kind": "project", "project": name}
        elif method == "PUT":
            kwargs["json"] = {"password": "whatever-123", "currentPassword": PASSWORD}
        r = api.request(method, path.format(name), **kwargs)
    body = r.json()
    message = body["metadata"]["message"].replace(name, "*")
    return r.status_code, body["errors"]["type"], message


USER_ROUTES = [
    ("GET", "/api/auth/users/{}"),
    ("GET", "/api/auth/users/{}/token"),
    ("GET", "/api/auth/users/{}/password?password=whatever-123"),
    ("PUT", "/api/auth/users/{}/password"),
]
PROJECT_ROUTES = [
    ("GET", "/api/projects/{}"),
    ("DELETE", "/api/projects/{}"),
    ("GET", "/api/projects/{}/members"),
    ("GET", "/api/projects/{}/token"),
    ("GET", "/api/projects/{}/tokens"),
    ("GET", "/api/projects/{}/services"),
    ("GET", "/api/projects/{}/services/some-service"),
    ("GET", "/api/projects/{}/files"),
    ("GET", "/api/projects/{}/files/info?fileKey=datasets/x.csv"),
    ("POST", "/api/auth/users/prober/projects/{}"),
    ("DELETE", "/api/auth/users/prober/projects/{}"),
    ("POST", "/api/auth/tokens"),
]


def test_others_users_and_projects_answer_like_absent_ones(lab: LabProcess) -> None:
    """A 403 for "exists, not yours" beside a 404 for "absent" let anyone list the
    lab's users and projects by name."""
    prober = add_user(lab, "prober", "probers")
    add_user(lab, "hidden-user", "hidden-proj")
    with lab.client(prober) as api:
        project_token = api.get("/api/projects/probers/token").json()["data"]
    for method, path in USER_ROUTES:
        absent = answer(lab, prober, method, path, "no-such-user")
        assert absent[0] == 404, (method, path, absent)
        assert answer(lab, prober, method, path, "hidden-user") == absent, (method, path)
    for method, path in PROJECT_ROUTES:
        absent = answer(lab, prober, method, path, "no-such-proj")
        assert absent[0] == 404, (method, path, absent)
        assert answer(lab, prober, method, path, "hidden-proj") == absent, (method, path)
        # A project token is refused some routes for what it is (403, either way): it
        # must not learn more of other projects than a person would.
        absent = answer(lab, project_token, method, path, "no-such-proj")
        assert absent[0] in (403, 404), (method, path, absent)
        hidden = answer(lab, project_token, method, path, "hidden-proj")
        assert hidden == absent, (method, path)


# -- through a lab process that does not lead ----------------------------------------------


def leads(lab: LabProcess) -> bool:
    return bool(httpx.get(f"{lab.url}/healthz", timeout=5).json()["data"]["leader"])


@pytest.fixture
def replicas(postgres_server_url: str, tmp_path: Path) -> Iterator[tuple[LabProcess, LabProcess]]:
    """Two lab processes on one PostgreSQL and one data folder: the first leads."""
    url, name = _fresh_postgres_database(postgres_server_url)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {**LAB_ENV, "SERVICELAB_INSTANCE_ID": f"members-{name[-8:]}"}
    labs: list[LabProcess] = []
    try:
        labs.append(LabProcess(data_dir, database_url=url, env=env).start(180))
        wait_until(lambda: leads(labs[0]), timeout=30, what="the first lab to lead")
        labs.append(LabProcess(data_dir, database_url=url, env=env).start(180))
        yield labs[0], labs[1]
    finally:
        for lab in labs:
            lab.stop()
        stop_local_services(data_dir, env["SERVICELAB_INSTANCE_ID"])
        _drop_postgres_database(postgres_server_url, name)


@pytest.mark.postgres
def test_a_removal_through_a_follower_renews_on_the_leader(
    replicas: tuple[LabProcess, LabProcess],
) -> None:
    """The lab process that is told may not be the one that starts and stops services:
    the renewal goes to the leader like any other command, and the old token is refused
    by both processes."""
    leader, follower = replicas
    assert leads(leader) and not leads(follower)
    member = add_user(follower, "roamer", "shared-r")
    with follower.client(member) as api:
        deploy(api, "shared-r", "roamers")
        stolen = service_token(api, "shared-r", "roamers")
    with follower.client() as admin:
        r = admin.delete("/api/auth/users/roamer/projects/shared-r")
        assert r.status_code == 200, r.text
    assert files_status(follower, stolen, "shared-r") == 401
    assert "roamers" in r.json()["metadata"]["message"]
    wait_until(
        lambda: files_status(leader, stolen, "shared-r") == 401,
        timeout=5,
        what="the leader to refuse the revoked token",
    )
    with follower.client() as admin:
        fresh = renewed_token(admin, "shared-r", "roamers", stolen)
    assert files_status(leader, fresh, "shared-r") == 200
