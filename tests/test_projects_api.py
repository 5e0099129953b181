"""Projects, members, project tokens and who may do what, on SQLite and PostgreSQL."""

from __future__ import annotations

from .conftest import Lab, make_settings, open_lab


def test_create_list_get_delete(lab: Lab) -> None:
    created = lab.create_project("My-Project")
    assert created["name"] == "my-project"  # lower-cased like service names
    assert created["owner"] == "admin"
    assert [p["name"] for p in lab.get("/api/projects").json()["data"]] == ["my-project"]
    assert lab.get("/api/projects/my-project").json()["data"]["members"] == ["admin"]
    assert lab.delete("/api/projects/my-project").status_code == 200
    r = lab.get("/api/projects/my-project")
    assert r.status_code == 404 and "was not found" in r.json()["errors"]["message"]


def test_long_names_are_cut_to_63(lab: Lab) -> None:
    created = lab.create_project("a" * 70)
    assert created["name"] == "a" * 63


def test_bad_and_duplicate_names(lab: Lab) -> None:
    for bad in ["-x-", "a", "no spaces", "ünïcode", "under_score"]:
        r = lab.post("/api/projects", json={"name": bad})
        assert r.status_code == 400, bad
        assert "Invalid project name" in r.json()["errors"]["message"]
    lab.create_project("dup")
    r = lab.post("/api/projects", json={"name": "DUP"})
    assert r.status_code == 409
    assert r.json()["errors"]["message"] == "Project 'dup' already exists."
    r = lab.post("/api/projects")
    assert r.status_code == 400


def test_ml_lab_query_form_of_create(lab: Lab) -> None:
    r = lab.post("/api/projects", params={"name": "from-query"})
    assert r.status_code == 201


def test_admin_member_stranger(lab: Lab) -> None:
    owner = lab.create_user("owner")
    member = lab.create_user("member")
    stranger = lab.create_user("stranger")
    lab.create_project("shared", owner)
    assert lab.post("/api/auth/users/member/projects/shared", owner).status_code == 200

    assert [p["name"] for p in lab.get("/api/projects", member).json()["data"]] == ["shared"]
    assert lab.get("/api/projects", stranger).json()["data"] == []
    assert lab.get("/api/projects/shared", member).status_code == 200
    # A project one may not open answers as if it did not exist (its name stays secret).
    r = lab.get("/api/projects/shared", stranger)
    assert r.status_code == 404 and r.json()["errors"]["type"] == "not_found"
    absent = lab.get("/api/projects/absent", stranger).json()
    assert r.json()["errors"]["message"] == absent["errors"]["message"].replace("absent", "shared")
    assert lab.get("/api/projects/shared").status_code == 200  # admin sees everything

    # Only owner or admin manage members and delete.
    assert lab.post("/api/auth/users/stranger/projects/shared", member).status_code == 403
    assert lab.delete("/api/projects/shared", member).status_code == 403
    assert lab.get("/api/projects/shared/members", member).json()["data"] == ["member", "owner"]
    assert lab.delete("/api/auth/users/member/projects/shared", owner).status_code == 200
    assert lab.get("/api/projects/shared", member).status_code == 404
    assert lab.delete("/api/projects/shared", owner).status_code == 200


def test_project_token_opens_its_project_only(lab: Lab) -> None:
    lab.create_project("alpha")
    lab.create_project("beta")
    r = lab.get("/api/projects/alpha/token")
    assert r.status_code == 200
    token = r.json()["data"]
    assert token.startswith("slp_")
    assert lab.get("/api/projects/alpha", token).status_code == 200
    r = lab.get("/api/projects/beta", token)
    assert r.status_code == 404
    assert r.json()["errors"]["message"] == "Project 'beta' was not found."
    assert [p["name"] for p in lab.get("/api/projects", token).json()["data"]] == ["alpha"]
    # A project token is not a user: it cannot mint tokens or create projects.
    assert lab.get("/api/projects/alpha/token", token).status_code == 403
    assert lab.post("/api/projects", token, json={"name": "gamma"}).status_code == 403
    assert lab.get("/api/auth/users", token).status_code == 403


def test_project_tokens_named_listed_revoked(lab: Lab) -> None:
    lab.create_project("tokened")
    r = lab.post("/api/projects/tokened/tokens", json={"name": "deploy bot", "expiresIn": 3600})
    assert r.status_code == 201
    data = r.json()["data"]
    secret, token_id = data["token"], data["id"]
    assert data["expiresAt"] is not None
    listed = lab.get("/api/projects/tokened/tokens").json()["data"]
    assert [t["name"] for t in listed] == ["deploy bot"]
    assert secret not in str(listed)
    assert lab.delete(f"/api/projects/tokened/tokens/{token_id}").status_code == 200
    from .labtools import wait_until

    wait_until(lambda: lab.get("/api/projects/tokened", secret).status_code == 401, timeout=5)


def test_deleting_a_project_revokes_its_tokens(lab: Lab) -> None:
    lab.create_project("doomed")
    token = lab.get("/api/projects/doomed/token").json()["data"]
    assert lab.delete("/api/projects/doomed").status_code == 200
    from .labtools import wait_until

    wait_until(lambda: lab.get("/api/auth/me", token).status_code == 401, timeout=5)


def test_restart_keeps_users_projects_and_tokens(tmp_path, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    with_user = {}
    for lab in open_lab(settings):
        bob = lab.create_user("bob")
        lab.create_project("kept", bob)
        with_user["project_token"] = lab.get("/api/projects/kept/token", bob).json()["data"]
        with_user["user_token"] = lab.post("/api/auth/tokens", bob, json={"name": "t"}).json()[
            "data"
        ]["token"]
    for lab in open_lab(settings):
        assert lab.get("/api/projects/kept", with_user["project_token"]).status_code == 200
        me = lab.get("/api/auth/me", with_user["user_token"]).json()["data"]
        assert me["username"] == "bob"
        r = lab.client.get("/api/auth/login", auth=("bob", "password-123"))
        assert r.status_code == 200
