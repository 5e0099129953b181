"""Service origins against a real lab and real Chromium: a hostile page opened by a
logged-in admin gets nothing of the lab, in the default `*.localhost` mode and in the
sandboxed fallback (the lab reached as `lab.test`, a host that is not loopback).

One lab for the module (local runtime): project `evil` with the hostile page, project
`secret` with a victim service (the same code, which answers any origin with CORS
credentials allowed), a member `mallory` of `evil` and an `outsider` of everything.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from websockets.sync.client import connect

from .browsertools import chromium
from .labtools import (
    ADMIN_PASSWORD,
    PLANES,
    ROOT,
    LabProcess,
    lab_env,
    stop_local_services,
    stop_nginx,
    wait_until,
)

HOSTILE = str(ROOT / "tests" / "services" / "hostile-page")
USER_PASSWORD = "password-of-a-user"
HOSTILE_PATH = "/api/projects/evil/services/hostile/8091/"
VICTIM_PATH = "/api/projects/secret/services/victim/8091/"

browser_test = pytest.mark.browser


@pytest.fixture(scope="module", params=PLANES)
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp(f"origins-lab-{request.param}") / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env=lab_env(request.param)).start()
    with lab.client() as api:
        for user in ("mallory", "outsider"):
            r = api.post("/api/auth/users", json={"username": user, "password": USER_PASSWORD})
            assert r.status_code == 201, r.text
        for project, service in (("evil", "hostile"), ("secret", "victim")):
            assert api.post("/api/projects", json={"name": project}).status_code == 201
            r = api.post(
                f"/api/projects/{project}/services",
                params={"name": service},
                json={"EXECUTE_CODE": HOSTILE},
            )
            assert r.status_code == 201, r.text
        assert api.post("/api/auth/users/mallory/projects/evil").status_code == 200
        for project, service in (("evil", "hostile"), ("secret", "victim")):
            wait_until(
                lambda p=project, s=service: (
                    api.get(f"/api/projects/{p}/services/{s}").json()["data"]["status"] == "running"
                ),
                timeout=60,
                what=f"{service} running",
            )
    yield lab
    lab.stop()
    stop_nginx(data_dir)
    stop_local_services(data_dir)


def origin_of(lab: LabProcess, service: str, project: str) -> str:
    return f"http://{service}--{project}.localhost:{lab.port}"


def get_on_host(lab: LabProcess, host: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request to `host` (a service host), sent to the lab's address: Python's resolver,
    unlike browsers and curl, does not know that `*.localhost` is loopback."""
    headers = {"Host": host, **kwargs.pop("headers", {})}
    return httpx.get(f"{lab.url}{path}", headers=headers, **kwargs)


@pytest.fixture
def browser() -> Iterator[Browser]:
    # `lab.test` is the lab under a name that is not loopback: the fallback.
    with chromium("--host-resolver-rules=MAP lab.test 127.0.0.1") as browser:
        yield browser


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    return context


def log_in(page: Page, base: str, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(f"{base}/projects")


def lab_state(lab: LabProcess) -> dict[str, Any]:
    """Users, projects and every live token of the lab (the handshake's codes aside)."""
    with lab.client() as api:
        users = sorted(u["name"] for u in api.get("/api/auth/users").json()["data"])
        projects = sorted(p["name"] for p in api.get("/api/projects").json()["data"])
    db = sqlite3.connect(f"file:{lab.data_dir / 'servicelab.db'}?mode=ro", uri=True)
    try:
        tokens = sorted(
            db.execute(
                "SELECT id, kind FROM api_tokens WHERE kind != 'code' AND revoked_at IS NULL"
            ).fetchall()
        )
    finally:
        db.close()
    return {"users": users, "projects": projects, "tokens": tokens}


def lab_cookies(context: BrowserContext, host: str) -> list[str]:
    return [
        c["value"]
        for c in context.cookies()
        if c["name"] == "lab_access_token" and c["domain"] == host
    ]


def run_hostile_page(context: BrowserContext, page_url: str) -> dict[str, bool]:
    page = context.new_page()
    page.goto(page_url)
    expect(page.locator("body[data-done='1']")).to_be_attached(timeout=120_000)
    results: dict[str, bool] = page.evaluate("window.results")
    notes = page.locator("#results").inner_text()
    # Its pop-ups (top-level navigations to the lab's token routes) are done too.
    for other in context.pages:
        if other is not page:
            other.wait_for_load_state()
    assert len(results) >= 20, notes
    assert not [name for name, got in results.items() if got], notes
    return results


@browser_test
def test_a_hostile_page_gets_nothing_on_its_own_origin(lab: LabProcess, browser: Browser) -> None:
    context = new_context(browser)
    page = context.new_page()
    log_in(page, lab.url)
    victim = origin_of(lab, "victim", "secret") + VICTIM_PATH
    # The UI's "Open" link and the API's `url` name the service's own origin.
    with lab.client() as api:
        data = api.get("/api/projects/secret/services/victim").json()["data"]
    assert data["url"] == victim
    assert data["endpoint"] == f"{lab.url}{VICTIM_PATH}"
    page.goto(f"{lab.url}/projects/secret")
    link = page.locator("#services-table tr[data-service=victim] a[data-port]").first
    assert link.get_attribute("href") == victim

    # The admin opens the victim: the handshake ends on its origin, at the clean URL, and
    # the service sees none of the lab's credentials; its own WebSocket and fetch work.
    page.goto(victim + "whoami")
    expect(page).to_have_url(victim + "whoami")
    assert "servicelab_service" not in page.inner_text("body")
    assert "lab_access_token" not in page.inner_text("body")
    own = page.evaluate(
        """async () => {
            const ws = await new Promise((resolve) => {
                const url = location.href.replace(/^http/, "ws").replace("whoami", "ws");
                const s = new WebSocket(url);
                s.onmessage = (e) => resolve(e.data);
                s.onerror = () => resolve("error");
            });
            const r = await fetch("whoami", { credentials: "include" });
            return [ws, r.status];
        }"""
    )
    assert own == ["hello", 200]
    # Its own cookies and forms work on its origin; the lab's cookies never reach it.
    page.evaluate("() => fetch('setcookie')")
    page.goto(victim + "whoami")
    page.evaluate(
        """() => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = "form";
            form.innerHTML = '<input name="q" value="posted-by-its-own-form">';
            document.body.append(form);
            form.submit();
        }"""
    )
    expect(page.locator("body")).to_contain_text("posted-by-its-own-form")
    seen = json.loads(page.inner_text("body"))
    assert seen["cookie"] == "own=kept"
    session = lab_cookies(context, "127.0.0.1")
    assert len(session) == 1
    before = lab_state(lab)

    hostile = origin_of(lab, "hostile", "evil") + HOSTILE_PATH
    query = f"?lab={lab.url}&victim={victim}&victimLab={lab.url}{VICTIM_PATH}"
    run_hostile_page(context, hostile + query)

    assert lab_state(lab) == before
    assert lab_cookies(context, "127.0.0.1") == session
    # The page may set what it likes on its own host (the proxy ignores the lab's cookie
    # names there); nowhere else, and the service's Set-Cookie for them never arrives.
    forged = [c for c in context.cookies() if "forged" in c["value"]]
    assert {c["domain"] for c in forged} == {"hostile--evil.localhost"}
    assert not [c for c in forged if c["value"] == "forged-by-service"]
    page.goto(f"{lab.url}/projects")
    expect(page).to_have_url(f"{lab.url}/projects")  # still logged in
    context.close()


@browser_test
def test_a_hostile_page_gets_nothing_in_the_sandbox(lab: LabProcess, browser: Browser) -> None:
    base = f"http://lab.test:{lab.port}"
    context = new_context(browser)
    page = context.new_page()
    log_in(page, base)
    # Admins are told once that services are sandboxed here, and how to change that.
    expect(page.locator("#origin-hint")).to_contain_text("SERVICELAB_SERVICE_DOMAIN")
    page.reload()
    expect(page.locator("#origin-hint")).to_have_count(0)

    victim = f"{base}{VICTIM_PATH}"
    with lab.client() as api:
        data = httpx.get(
            f"{lab.url}/api/projects/secret/services/victim",
            headers={"Host": f"lab.test:{lab.port}", **api.headers},
        ).json()["data"]
    assert data["url"] == victim
    response = page.goto(victim + "whoami")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert csp.startswith("sandbox") and "allow-same-origin" not in csp
    session = lab_cookies(context, "lab.test")
    assert len(session) == 1
    before = lab_state(lab)

    query = f"?lab={base}&victim={victim}&victimLab={victim}"
    run_hostile_page(context, f"{base}{HOSTILE_PATH}{query}")

    assert lab_state(lab) == before
    assert lab_cookies(context, "lab.test") == session
    page.goto(f"{base}/projects")
    expect(page).to_have_url(f"{base}/projects")
    context.close()


@browser_test
def test_lab_token_link_non_member_and_logout(lab: LabProcess, browser: Browser) -> None:
    victim = origin_of(lab, "victim", "secret") + VICTIM_PATH
    with lab.client() as api:
        token = api.get("/api/projects/secret/token").json()["data"]

    # A lab_token link in a fresh browser: the service's cookie and the clean URL.
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{victim}whoami?lab_token={token}&keep=1")
    expect(page).to_have_url(f"{victim}whoami?keep=1")
    assert token not in page.inner_text("body")
    names = {(c["name"], c["domain"]) for c in context.cookies()}
    assert names == {("servicelab_service", "victim--secret.localhost")}
    cookie = next(c for c in context.cookies())
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    context.close()

    # A logged-in user without access to the project: 404 at the handshake, as if the
    # project did not exist (a 403 would tell which project names do).
    context = new_context(browser)
    page = context.new_page()
    log_in(page, lab.url, "outsider", USER_PASSWORD)
    response = page.goto(victim)
    assert response is not None and response.status == 404
    assert "secret" in page.inner_text("body")
    context.close()

    # Logging out of the lab ends the service's session within 5 s.
    context = new_context(browser)
    page = context.new_page()
    log_in(page, lab.url)
    page.goto(victim + "whoami")
    expect(page).to_have_url(victim + "whoami")
    service = context.new_page()
    page.goto(f"{lab.url}/projects")
    page.click("details.usermenu > summary")
    page.click("button.logout")
    expect(page).to_have_url(re.compile(r"/login$"))

    def service_session_over() -> bool:
        service.goto(victim + "whoami")
        return "/login?next=" in service.url

    wait_until(service_session_over, timeout=5, interval=0.2, what="service session ended")
    context.close()


def code_for(lab: LabProcess, token: str, path: str = VICTIM_PATH) -> str:
    """A one-time code, from the lab's half of the handshake (`lab_token` on its path)."""
    r = httpx.get(f"{lab.url}{path}whoami", params={"lab_token": token})
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(origin_of(lab, "victim", "secret") + "/_servicelab/callback?code=")
    assert token not in location
    return location.split("code=", 1)[1]


def test_codes_are_single_use_and_bound_to_their_service(lab: LabProcess) -> None:
    with lab.client() as api:
        token = api.get("/api/projects/secret/token").json()["data"]
    host = f"victim--secret.localhost:{lab.port}"
    code = code_for(lab, token)
    r = get_on_host(lab, host, f"/_servicelab/callback?code={code}")
    assert r.status_code == 302 and r.headers["location"] == f"{VICTIM_PATH}whoami"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("servicelab_service=")
    for flag in ("Path=/", "HttpOnly", "SameSite=Lax"):
        assert flag in cookie
    assert "Domain" not in cookie
    grant = cookie.split(";")[0].split("=", 1)[1]
    seen = get_on_host(
        lab, host, f"{VICTIM_PATH}whoami", headers={"Cookie": f"servicelab_service={grant}"}
    )
    assert seen.status_code == 200 and seen.json() == {"cookie": ""}

    # Replayed, for another service, forged: refused with a message that says what to do.
    replay = get_on_host(lab, host, f"/_servicelab/callback?code={code}")
    assert replay.status_code == 400 and "open the service again" in replay.text
    foreign = get_on_host(
        lab,
        f"hostile--evil.localhost:{lab.port}",
        f"/_servicelab/callback?code={code_for(lab, token)}",
    )
    assert foreign.status_code == 400
    forged = code_for(lab, token)
    forged = forged[:-2] + ("AA" if forged[-2:] != "AA" else "BB")
    assert get_on_host(lab, host, f"/_servicelab/callback?code={forged}").status_code == 400

    # The victim's cookie opens nothing on another service's host, nor the lab's API.
    other = get_on_host(
        lab,
        f"hostile--evil.localhost:{lab.port}",
        f"{HOSTILE_PATH}whoami",
        headers={"Cookie": f"servicelab_service={grant}"},
    )
    assert other.status_code == 401
    api = httpx.get(f"{lab.url}/api/projects", cookies={"lab_access_token": grant})
    assert api.status_code == 401
    # A service host answers its own service's routes and nothing of the lab.
    for path in ("/api/auth/me", "/projects", "/login", f"{HOSTILE_PATH}whoami", "/static/app.js"):
        r = get_on_host(lab, host, path, headers={"Authorization": f"Bearer {lab.admin_token}"})
        assert r.status_code == 404, path


def test_api_clients_keep_the_path_route(lab: LabProcess) -> None:
    """ML Lab's path route with an Authorization header answers as before, credentials
    stripped; a browser there (lab cookie) is sent to the service's origin."""
    with lab.client() as api:
        token = api.get("/api/projects/secret/token").json()["data"]
    r = httpx.get(
        f"{lab.url}{VICTIM_PATH}whoami",
        headers={"Authorization": f"Bearer {token}", "Cookie": "theme=dark"},
    )
    assert r.status_code == 200 and r.json() == {"cookie": "theme=dark"}
    assert "content-security-policy" not in r.headers
    browser_like = httpx.get(
        f"{lab.url}{VICTIM_PATH}whoami",
        cookies={"lab_access_token": lab.admin_token},
        headers={"Accept": "text/html"},
    )
    assert browser_like.status_code == 302
    assert browser_like.headers["location"].startswith(origin_of(lab, "victim", "secret"))
    # A service's Set-Cookie for the lab's cookies never reaches the browser.
    r = httpx.get(f"{lab.url}{VICTIM_PATH}setcookie", headers={"Authorization": f"Bearer {token}"})
    assert r.headers.get_list("set-cookie") == ["own=kept; Path=/"]


def test_no_token_code_or_cookie_value_in_the_log(lab: LabProcess) -> None:
    with lab.client() as api:
        token = api.get("/api/projects/secret/token").json()["data"]
    host = f"victim--secret.localhost:{lab.port}"
    secrets = [token, lab.admin_token]
    # A WebSocket with ?lab_token= on the service's host and on the lab's path route.
    for url, sock_host in (
        (f"ws://{host}{VICTIM_PATH}ws?lab_token={token}", host),
        (f"ws://127.0.0.1:{lab.port}{VICTIM_PATH}ws?lab_token={token}", None),
    ):
        sock = socket.create_connection(("127.0.0.1", lab.port)) if sock_host else None
        with connect(url, sock=sock, open_timeout=10) as ws:
            assert ws.recv(timeout=10) == "hello"
    # The handshake: a code and the cookie it becomes.
    code = code_for(lab, token)
    r = get_on_host(lab, host, f"/_servicelab/callback?code={code}")
    grant = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    secrets += [code, grant, code.split(".")[0], grant.split(".")[1]]
    r = get_on_host(lab, host, f"{VICTIM_PATH}whoami?lab_token={token}")
    assert r.status_code == 302

    log = (lab.data_dir.parent / f"lab-{lab.port}.log").read_text(errors="replace")
    assert "WebSocket" in log and "/_servicelab/callback" in log
    leaked = [s[:12] for s in secrets if s in log]
    assert not leaked, f"in the log: {leaked}"
    assert not re.search(r"\b(sls|slu|slp)_[A-Za-z0-9_-]{8}", log)
