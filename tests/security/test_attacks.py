"""Attacks by an ordinary member on a real lab, each one a hole that was found and fixed.

Every test runs on both proxy planes, in the proxy labs the proxy's tests share
(tests/conftest.py): `mallory` is a member of `mine` only, which runs an echo service.
"""

from __future__ import annotations

import json

import httpx
import pytest

from ..labtools import LabProcess, deploy, login

PASSWORD = "mallory-pw-1"
ECHO_PATH = "/api/projects/mine/services/myecho/8091/"


@pytest.fixture(scope="module")
def lab(proxy_lab: LabProcess) -> LabProcess:
    """The proxy lab of each plane (see tests/conftest.py), with `mallory` a member of
    `mine`, which runs an echo service."""
    with proxy_lab.client() as api:
        assert api.post("/api/projects", json={"name": "mine"}).status_code == 201
        r = api.post("/api/auth/users", json={"username": "mallory", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert api.post("/api/auth/users/mallory/projects/mine").status_code == 200
        deploy(api, "mine", "myecho")
    return proxy_lab


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


def test_nginx_decision_cache_keeps_cross_site_requests_out(lab: LabProcess, mallory: str) -> None:
    """The service-origin cookie opens its service to another page only as a top-level
    navigation. nginx cached the lab's "admitted" for a second under a key without
    Sec-Fetch-Site/-Mode, so a no-cors request from another site (`<script src>`, `<img>`)
    right after the user's own page loaded was served as if it were that page's."""
    host = "myecho--mine.localhost:" + str(lab.port)
    with httpx.Client(base_url=lab.url, headers={"host": host}, timeout=30) as svc:
        r = svc.get(ECHO_PATH, params={"lab_token": mallory})
        assert r.status_code == 302, r.text
        grant = r.cookies["servicelab_service"]
        cookie = {"cookie": f"servicelab_service={grant}"}
        own = {**cookie, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
        foreign = {**cookie, "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
        answers = []
        for _ in range(5):
            assert svc.get(ECHO_PATH + "headers", headers=own).status_code == 200
            answers.append(svc.get(ECHO_PATH + "headers", headers=foreign).status_code)
    assert answers == [403] * 5


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"code": "git+https://[::1/app"}, "Invalid VCS URL"),
        ({"code": "git+https://127.0.0.1:1/app", "env": {"A": "\ud800"}}, "lone surrogate"),
        ({"code": "git+https://127.0.0.1:1/\ud800"}, "lone surrogate"),
        ({"code": "git+https://127.0.0.1:1/app@\ud800"}, "lone surrogate"),
        ({"code": "git+https://127.0.0.1:1/app", "health": {"path": "/\ud800"}}, "lone surrogate"),
    ],
)
def test_bad_text_in_a_spec_is_a_400_and_stores_nothing(
    lab: LabProcess, mallory: str, spec: dict, says: str
) -> None:
    """A lone surrogate (valid JSON, not valid text) was stored, then failed to render:
    a 500, and a service row the reconciler crashed on; an unclosed IPv6 bracket in a VCS
    URL raised ValueError from urlsplit."""
    with lab.client(mallory) as api:
        r = api.put(
            "/api/projects/mine/services/badtext",
            content=json.dumps(spec),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert says in r.json()["metadata"]["message"]
        assert api.get("/api/projects/mine/services/badtext").status_code == 404


def test_lone_surrogates_in_log_in_and_password_are_a_400(lab: LabProcess, mallory: str) -> None:
    """Anyone could make the log-in route 500 with `{"username": "\\ud800"}` (the database
    cannot encode it), and a member their password change (argon2 cannot either)."""
    bad = json.dumps({"username": "\ud800", "password": "\ud800"})
    r = httpx.post(
        f"{lab.url}/api/auth/login",
        content=bad,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert "not valid Unicode" in r.json()["metadata"]["message"]
    with lab.client(mallory) as api:
        change = {"password": "\ud800" * 12, "currentPassword": PASSWORD}
        r = api.put(
            "/api/auth/users/mallory/password",
            content=json.dumps(change),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert "not valid Unicode" in r.json()["metadata"]["message"]
    assert login(lab.url, "mallory", PASSWORD)
