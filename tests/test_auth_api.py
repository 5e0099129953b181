"""Log-in, tokens and the ways of passing them, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

from .conftest import Lab
from .labtools import wait_until


def test_login_basic_returns_token_and_sets_safe_cookie(lab: Lab) -> None:
    r = lab.client.get("/api/auth/login", auth=("admin", "admin-password-for-tests"))
    assert r.status_code == 200
    token = r.json()["data"]
    assert token.startswith("sls_")
    cookie = r.headers["set-cookie"]
    assert "lab_access_token=" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure


def test_login_post_json_and_form(lab: Lab) -> None:
    r = lab.client.post(
        "/api/auth/login", json={"username": "admin", "password": "admin-password-for-tests"}
    )
    assert r.status_code == 200
    assert r.json()["data"]["user"]["username"] == "admin"
    assert r.json()["data"]["csrfToken"]
    r = lab.client.post(
        "/api/auth/login", data={"username": "admin", "password": "admin-password-for-tests"}
    )
    assert r.status_code == 200


def test_wrong_password_is_401_in_envelope(lab: Lab) -> None:
    r = lab.client.get("/api/auth/login", auth=("admin", "nope"))
    assert r.status_code == 401
    body = r.json()
    assert body["data"] is None
    assert body["errors"]["code"] == 401 and body["errors"]["type"] == "unauthorized"
    assert "password" in body["errors"]["message"]
    assert body["metadata"]["status"] == 401


def test_each_way_of_passing_a_token(lab: Lab) -> None:
    token = lab.admin_token
    c = lab.client
    assert c.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.get("/api/auth/me", headers={"Authorization": token}).status_code == 200
    assert c.get("/api/auth/me", cookies={"lab_access_token": token}).status_code == 200
    c.cookies.clear()
    assert c.get("/api/auth/me", params={"lab_token": token}).status_code == 200
    assert c.get("/api/auth/me").status_code == 401
    assert c.get("/api/auth/me", headers={"Authorization": "Bearer sls_wrong"}).status_code == 401
    basic = base64.b64encode(b"admin:admin-password-for-tests").decode()
    # Basic credentials are for /login only; they are not a token.
    assert c.get("/api/auth/me", headers={"Authorization": f"Basic {basic}"}).status_code == 401


def test_me_shows_user_but_no_secret(lab: Lab) -> None:
    data = lab.get("/api/auth/me").json()["data"]
    assert data["username"] == "admin" and data["admin"] is True
    assert lab.admin_token not in str(data)
    assert lab.get("/api/auth/users/me").json()["data"]["username"] == "admin"


def test_cookie_auth_needs_csrf_token_for_writes(lab: Lab) -> None:
    c = lab.client
    login = c.post(
        "/api/auth/login", json={"username": "admin", "password": "admin-password-for-tests"}
    )
    csrf = login.json()["data"]["csrfToken"]
    # The client now holds the session cookie, like a browser.
    r = c.post("/api/projects", json={"name": "csrf-test"})
    assert r.status_code == 403
    assert "CSRF" in r.json()["errors"]["message"]
    r = c.post("/api/projects", json={"name": "csrf-test"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    assert c.get("/api/projects").status_code == 200  # reads need no CSRF token
    c.cookies.clear()


def test_user_token_created_listed_and_revoked(lab: Lab) -> None:
    r = lab.post("/api/auth/tokens", json={"name": "ci", "kind": "user"})
    assert r.status_code == 201
    secret = r.json()["data"]["token"]
    token_id = r.json()["data"]["id"]
    assert secret.startswith("slu_")
    listed = lab.get("/api/auth/tokens").json()["data"]
    assert [t["name"] for t in listed] == ["ci"]
    assert secret not in str(listed)
    assert lab.get("/api/projects", secret).status_code == 200
    assert lab.delete(f"/api/auth/tokens/{token_id}").status_code == 200
    # Revocation takes effect everywhere within 5 s, caches included.
    wait_until(
        lambda: lab.get("/api/projects", secret).status_code == 401, timeout=5, what="revocation"
    )
    assert lab.get("/api/auth/tokens").json()["data"] == []


def test_expired_token_is_401(lab: Lab) -> None:
    r = lab.post("/api/auth/tokens", json={"name": "short", "expiresIn": 1})
    secret = r.json()["data"]["token"]
    assert lab.get("/api/projects", secret).status_code == 200
    r = wait_until(
        lambda: (resp := lab.get("/api/projects", secret)).status_code == 401 and resp,
        timeout=5,
        what="expiry",
    )
    assert "expired" in r.json()["errors"]["message"] or "Invalid" in r.json()["errors"]["message"]


def test_ml_lab_user_token_route(lab: Lab) -> None:
    r = lab.get("/api/auth/users/admin/token")
    assert r.status_code == 200
    secret = r.json()["data"]
    assert secret.startswith("slu_")
    assert lab.get("/api/auth/me", secret).json()["data"]["username"] == "admin"


def test_logout_ends_the_session(lab: Lab) -> None:
    token = lab.create_user("bob")
    assert lab.get("/api/auth/me", token).status_code == 200
    assert lab.get("/api/auth/logout", token).status_code == 200
    wait_until(lambda: lab.get("/api/auth/me", token).status_code == 401, timeout=5, what="logout")


def test_refresh_gives_a_new_session(lab: Lab) -> None:
    r = lab.get("/api/auth/refresh")
    assert r.status_code == 200
    assert r.json()["data"] != lab.admin_token
    assert lab.get("/api/auth/me", r.json()["data"]).status_code == 200


def test_only_admin_manages_users(lab: Lab) -> None:
    bob = lab.create_user("bob")
    r = lab.post("/api/auth/users", bob, json={"username": "eve", "password": "password-123"})
    assert r.status_code == 403
    assert lab.get("/api/auth/users", bob).status_code == 403
    names = [u["username"] for u in lab.get("/api/auth/users").json()["data"]]
    assert names == ["admin", "bob"]
    # ML Lab's query-parameter form works too.
    r = lab.post("/api/auth/users", params={"user": "carol", "password": "password-123"})
    assert r.status_code == 201


def test_bad_and_duplicate_user_names(lab: Lab) -> None:
    r = lab.post("/api/auth/users", json={"username": "-bad-", "password": "password-123"})
    assert r.status_code == 400 and "Invalid username" in r.json()["errors"]["message"]
    lab.create_user("dave")
    r = lab.post("/api/auth/users", json={"username": "DAVE", "password": "password-123"})
    assert r.status_code == 409 and "already exists" in r.json()["errors"]["message"]
    r = lab.post("/api/auth/users", json={"username": "erin", "password": "short"})
    assert r.status_code == 400


def test_openapi_and_healthz(lab: Lab) -> None:
    assert lab.client.get("/healthz").json()["data"]["status"] == "ok"
    spec = lab.client.get("/api/openapi.json").json()
    assert "/api/projects/{project}/token" in spec["paths"]
    assert "/api/auth/login" in spec["paths"]
    assert lab.client.get("/api/docs").status_code == 200


def test_unknown_route_and_bad_body_are_enveloped(lab: Lab) -> None:
    r = lab.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["errors"]["type"] == "not_found"
    r = lab.post("/api/auth/tokens", json={"expiresIn": "soon"})
    assert r.status_code == 400
    assert "expiresIn" in r.json()["errors"]["message"]
