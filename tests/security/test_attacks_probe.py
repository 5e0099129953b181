"""The attacker who probes the proxy for project names (issue #26, "the same 404 for
'absent' and 'not yours'"), on both proxy planes.

A member of `alpha` asks the proxy for a service in `beta` (which exists and is not
theirs) and in a project that does not exist. If the two answers differ in anything but
the name asked for, any lab account (or any project token) can list the lab's projects.
"""

from __future__ import annotations

import re

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ..labtools import LabProcess, login

PASSWORD = "password-123"
#: `beta` exists in the proxy labs (tests/conftest.py); this one never does.
EXISTING, ABSENT = "beta", "qbeta-absent"
#: Headers that may differ between any two answers.
VOLATILE = {"date", "content-length"}


def same_body(body: bytes, project: str) -> bytes:
    """The body with the name asked for and the envelope's clock taken out."""
    return re.sub(rb'"time": \d+', b'"time": 0', bytes(body).replace(project.encode(), b"<name>"))


@pytest.fixture(scope="module")
def lab(proxy_lab: LabProcess) -> LabProcess:
    return proxy_lab


def member_of_alpha(lab: LabProcess) -> dict[str, str]:
    """Every kind of token a member of `alpha` (and of nothing else) may hold."""
    name = "prober"
    with lab.client() as api:
        if api.get(f"/api/auth/users/{name}").status_code == 404:
            r = api.post("/api/auth/users", json={"username": name, "password": PASSWORD})
            assert r.status_code == 201, r.text
            r = api.post(f"/api/auth/users/{name}/projects/alpha")
            assert r.status_code == 200, r.text
    session = login(lab.url, name, PASSWORD)
    with lab.client(session) as api:
        user_token = api.get(f"/api/auth/users/{name}/token").json()["data"]
        project_token = api.get("/api/projects/alpha/token").json()["data"]
    return {"session": session, "user": user_token, "project": project_token}


def path(project: str) -> str:
    return f"/api/projects/{project}/services/x/8091/"


def answer(response: httpx.Response, project: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body, with the name asked for taken out."""
    headers = sorted(
        (k.lower(), v.replace(project, "<name>"))
        for k, v in response.headers.items()
        if k.lower() not in VOLATILE
    )
    return response.status_code, headers, same_body(response.content, project)


def probe(lab: LabProcess, project: str, **kw: object) -> tuple[int, list, bytes]:
    return answer(httpx.get(lab.url + path(project), **kw), project)  # type: ignore[arg-type]


def test_not_yours_answers_exactly_like_absent(lab: LabProcess) -> None:
    tokens = member_of_alpha(lab)
    ways: dict[str, dict[str, object]] = {}
    for kind, token in tokens.items():
        ways[f"{kind} in the header"] = {"headers": {"Authorization": f"Bearer {token}"}}
        ways[f"{kind} as a bare header"] = {"headers": {"Authorization": token}}
    cookie = f"lab_access_token={tokens['session']}"
    ways["lab cookie, a script"] = {"headers": {"Cookie": cookie}}
    ways["lab cookie, a browser"] = {"headers": {"Cookie": cookie, "Accept": "text/html"}}
    # Where no service origin can be formed (the sandboxed fallback).
    ways["lab cookie, fallback host"] = {"headers": {"Cookie": cookie, "Host": "lab.example"}}
    ways["lab_token, fallback host"] = {
        "headers": {"Host": "lab.example"},
        "params": {"lab_token": tokens["session"]},
    }
    for way, kw in ways.items():
        existing, absent = probe(lab, EXISTING, **kw), probe(lab, ABSENT, **kw)
        assert existing == absent, way
        status, _, body = existing
        assert status == 404, (way, body)
        assert b"Project '<name>' was not found." in body, (way, body)

    # The member's own project still opens (the refusal is about the project, not them).
    ok = httpx.get(
        f"{lab.url}/api/projects/alpha/services/echo/8091/",
        headers={"Authorization": f"Bearer {tokens['user']}"},
    )
    assert ok.status_code == 200, ok.text
    # And the API's own routes agree with the proxy.
    for project in (EXISTING, ABSENT):
        r = httpx.get(
            f"{lab.url}/api/projects/{project}",
            headers={"Authorization": f"Bearer {tokens['user']}"},
        )
        assert r.status_code == 404, r.text


def test_a_websocket_probe_learns_nothing_either(lab: LabProcess) -> None:
    token = member_of_alpha(lab)["user"]
    seen = []
    for project in (EXISTING, ABSENT):
        url = f"ws://127.0.0.1:{lab.port}{path(project)}"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        response = refused.value.response
        seen.append((response.status_code, same_body(response.body, project)))
    assert seen[0] == seen[1]
    assert seen[0][0] == 404, seen
