"""The web UI in a real browser (Debian's Chromium through Playwright) against a real lab.

Each browser test starts `servicelab serve` (the `lab_process` fixture, local runtime) and
drives it as a person would: log in, create a project, deploy the echo service through
the form, watch it start without reloading, open it through the proxy, read its logs, get
a project token and use it with curl, upload and download data, delete, log out.
Screenshots of each main page go to `screenshots/` (git-ignored).

Setup: `scripts/setup-browser.sh` (installs Debian's chromium; never `playwright install`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from servicelab.app import create_app
from servicelab.web.session import safe_next

from .browsertools import chromium
from .conftest import make_settings
from .labtools import ADMIN_PASSWORD, ROOT, LabProcess, wait_until

SCREENSHOTS = ROOT / "screenshots"
ECHO_SERVICE = ROOT / "tests" / "services" / "echo-service"
#: Generous: a code service installs nothing here, but the machine has two busy cores.
SLOW = 60_000

browser_test = pytest.mark.browser
# Playwright's `expect` waits 5 s by default; pages here wait on a lab and its services.
expect.set_options(timeout=15_000)


# -- plain checks, no browser -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "",
        None,
        "relative/path",
        "/ok\r\nSet-Cookie: x=1",
    ],
)
def test_next_refuses_anything_but_a_local_path(value: str | None) -> None:
    assert safe_next(value) == "/projects"
    assert safe_next(value, "/lab") == "/lab/projects"


def test_next_keeps_local_paths_with_their_query() -> None:
    path = "/api/projects/demo/services/echo/8091/?x=1"
    assert safe_next(path) == path


def test_pages_and_links_follow_the_base_path(tmp_path: Path) -> None:
    """Mounted under a prefix (`root_path`), every link, form and script carries it."""
    app = create_app(make_settings(tmp_path / "data"))
    with TestClient(app, root_path="/lab") as client:
        r = client.get("/lab/projects", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/lab/login?next=/lab/projects"
        r = client.post(
            "/lab/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/lab/projects"},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/lab/projects"
        page = client.get("/lab/projects").text
        assert 'data-base="/lab"' in page
        assert 'src="/lab/static/htmx.min.js"' in page
        assert 'action="/lab/logout"' in page
        assert not re.search(r'(href|src|action)="/(?!lab/)', page)
        assert client.get("/lab/static/htmx.min.js").status_code == 200


# -- browser fixtures ---------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium, for one test.

    Function-scoped and set up after `lab_process` (see `page`), so it is closed before the
    lab's teardown runs: Playwright's sync API keeps an asyncio loop running while it is
    open, and the lab's teardown uses `asyncio.run`.
    """
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(lab_process: LabProcess, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        base_url=lab_process.url, viewport={"width": 1280, "height": 860}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Every confirmation ("Delete ...?") is accepted, as a user sure of it would.
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot (from the top: a sticky bar would otherwise sit mid-page)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    if full_page:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def log_in(page: Page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Log in')")


def open_user_menu(page: Page) -> None:
    page.click("details.usermenu > summary")


def session_cookie(page: Page) -> str:
    cookies = page.context.cookies()
    return next(c["value"] for c in cookies if c["name"] == "lab_access_token")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, check=True
    )


# -- the journey ------------------------------------------------------------------------------


@browser_test
def test_a_user_deploys_watches_and_removes_a_service(
    page: Page, lab_process: LabProcess, tmp_path: Path
) -> None:
    p = page
    url = lab_process.url

    # Without a session every page sends the browser to the log-in page, and back after.
    p.goto("/projects")
    expect(p).to_have_url(re.compile(r"/login\?next=/projects$"))
    shot(p, "login")
    log_in(p, password="wrong-password")
    expect(p.locator(".notice.error")).to_contain_text("Wrong username or password")
    log_in(p)
    expect(p).to_have_url(f"{url}/projects")

    # A project.
    p.fill("input[name=name]", "demo")
    p.fill("input[name=description]", "Made in a browser test")
    p.click("button:has-text('Create project')")
    expect(p).to_have_url(f"{url}/projects/demo")
    expect(p.locator("h1")).to_have_text("demo")

    # A code service with a parameter and a secret, through the deploy form.
    form = p.locator("#deploy-form")
    form.locator("input[name=code]").fill(str(ECHO_SERVICE))
    form.locator("input[name=name]").fill("echo")
    form.locator("input[name=param-key]").nth(0).fill("GREETING")
    form.locator("input[name=param-value]").nth(0).fill("hello-from-the-ui")
    form.locator("button:has-text('Add parameter')").click()
    form.locator("input[name=param-key]").nth(1).fill("API_SECRET")
    form.locator("input[name=param-value]").nth(1).fill("s3cret-value")
    form.locator("input[name=param-secret]").nth(1).check()
    form.locator("summary:has-text('Advanced')").click()
    form.locator("input[name=memory]").fill("256m")
    shot(p, "deploy-form")
    form.locator("button:has-text('Deploy')").click()

    # The table polls: the service becomes running and healthy without a reload.
    row = p.locator("#services-table tr[data-service=echo]")
    expect(row).to_be_visible()
    expect(row.locator("[data-status]")).to_have_text("running", timeout=SLOW)
    expect(row.locator("[data-health]")).to_have_text("healthy", timeout=SLOW)
    shot(p, "project")

    # Its port opens on the service's own origin, logged in by the lab's handshake.
    port = row.locator("a[data-port]").first
    with p.context.expect_page() as popup_info:
        port.click()
    service_page = popup_info.value
    expect(service_page.locator("body")).to_have_text("ok")
    service_url = service_page.url
    origin = f"http://echo--demo.localhost:{lab_process.port}"
    assert service_url == f"{origin}/api/projects/demo/services/echo/8091/"
    service_page.goto(service_url + "env")
    env = json.loads(service_page.locator("body").inner_text())
    assert env["GREETING"] == "hello-from-the-ui"
    assert env["API_SECRET"] == "s3cret-value"

    # The service page: its spec with the secret masked, and its logs following live.
    row.locator("a.strong").click()
    expect(p).to_have_url(f"{url}/projects/demo/services/echo")
    config = p.locator("#config-table")
    expect(config.locator("tr:has-text('GREETING')")).to_contain_text("hello-from-the-ui")
    expect(config.locator("tr:has-text('API_SECRET')")).to_contain_text("********")
    expect(config.locator("tr:has-text('LAB_API_TOKEN')")).to_contain_text("********")
    assert "s3cret-value" not in p.content()
    logs = p.locator("#logs")
    expect(logs).to_contain_text("echo-service listening", timeout=SLOW)
    service_page.goto(service_url + "log?text=printed-while-watching&n=2")
    expect(logs).to_contain_text("printed-while-watching 1", timeout=SLOW)
    service_page.close()
    shot(p, "service")

    # Stop and start again from the service page; its status follows by itself.
    status = p.locator("#service-status [data-status]")
    p.click("#service-status button:has-text('Stop')")
    expect(status).to_have_text("stopped", timeout=SLOW)
    p.click("#service-status button:has-text('Start')")
    expect(status).to_have_text("running", timeout=SLOW)

    # "Get Project API Token": shown once, then used with curl.
    open_user_menu(p)
    p.click("text=Get Project API Token")
    dialog = p.locator("#project-token-dialog")
    expect(dialog.locator("select[name=project]")).to_have_value("demo")
    dialog.locator("input[name=name]").fill("curl from the test")
    shot(p, "project-token", full_page=False)
    dialog.locator("button:has-text('Create token')").click()
    secret = p.locator("#secret-value")
    expect(secret).to_have_text(re.compile(r"^\S{20,}$"))
    token = secret.inner_text()
    p.click("#secret-dialog button:has-text('Done')")
    expect(secret).to_have_text("")
    answer = curl("-H", f"Authorization: Bearer {token}", service_url + "env")
    assert json.loads(answer.stdout)["GREETING"] == "hello-from-the-ui"
    listing = curl("-H", f"Authorization: Bearer {token}", f"{url}/api/projects/demo/services")
    assert json.loads(listing.stdout)["data"][0]["name"] == "echo"

    # Data: upload twice (two versions) with the progress bar, download, delete.
    p.goto("/projects/demo")
    if p.locator("#files").count() and "not enabled" in p.locator("#files").inner_text():
        pytest.fail("the files API is not wired into the app (servicelab.api.files.install)")
    upload = tmp_path / "weights.bin"
    first, second = os.urandom(300_000), os.urandom(200_000)
    for content, version in ((first, 1), (second, 2)):
        upload.write_bytes(content)
        p.set_input_files("#upload-form input[name=file]", str(upload))
        p.select_option("#upload-form select[name=dataType]", "models")
        p.click("#upload-form button:has-text('Upload')")
        expect(
            p.locator(f"#files-table tr[data-file-key='models/weights.bin.v{version}']")
        ).to_be_visible()
    latest = p.locator("#files-table tr[data-file-key='models/weights.bin.v2']")
    expect(latest).to_contain_text("latest")
    expect(latest).to_contain_text("195.3 KiB")
    with p.expect_download() as download_info:
        latest.locator("a:has-text('Download')").click()
    assert Path(download_info.value.path()).read_bytes() == second
    shot(p, "project-with-data")
    older = p.locator("#files-table tr[data-file-key='models/weights.bin.v1']")
    older.locator("button:has-text('Delete')").click()
    expect(older).to_have_count(0)
    expect(latest).to_be_visible()

    # Delete the service (the menu's first entry keeps its data).
    row.locator("details.more > summary").click()
    row.locator("button:has-text('Delete')").first.click()
    expect(row).to_have_count(0, timeout=SLOW)
    expect(p.locator("#services")).to_contain_text("No services yet")

    # Log out: the page, the API and the old cookie are all refused.
    cookie = session_cookie(p)
    open_user_menu(p)
    p.click("button:has-text('Log out')")
    expect(p).to_have_url(f"{url}/login")
    p.goto("/projects/demo")
    expect(p).to_have_url(re.compile(r"/login\?next="))
    refused = httpx.get(f"{url}/api/projects", cookies={"lab_access_token": cookie})
    assert refused.status_code == 401


@browser_test
def test_csrf_and_the_way_back_after_log_in(page: Page, lab_process: LabProcess) -> None:
    p = page
    url = lab_process.url
    with lab_process.client() as api:
        assert api.post("/api/projects", json={"name": "shop"}).status_code == 201
        r = api.post(
            "/api/projects/shop/services",
            params={"name": "echo"},
            json={"EXECUTE_CODE": str(ECHO_SERVICE)},
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: api.get("/api/projects/shop/services/echo").json()["data"]["isHealthy"],
            timeout=60,
            what="the echo service to be healthy",
        )

    # A browser sent to the log-in page by the proxy comes back to the service after it,
    # on the service's own origin.
    service = "/api/projects/shop/services/echo/8091/"
    p.goto(service)
    expect(p).to_have_url(f"{url}/login?next={quote(service, safe='/')}")
    log_in(p)
    origin = f"http://echo--shop.localhost:{lab_process.port}"
    expect(p).to_have_url(f"{origin}{service}", timeout=SLOW)
    expect(p.locator("body")).to_have_text("ok", timeout=SLOW)

    # A POST with the session cookie but without the CSRF token is refused...
    refused = p.request.post(f"{url}/api/projects", data={"name": "forged"})
    assert refused.status == 403
    assert "CSRF" in refused.json()["errors"]["message"]
    # ...and so is a log-out from another site (no csrf_token field).
    refused = p.request.post(f"{url}/logout", form={"csrf_token": "forged"})
    assert refused.status == 403
    # With the page's token it goes through.
    p.goto("/projects")
    csrf = p.locator("body").get_attribute("data-csrf")
    made = p.request.post(
        f"{url}/api/projects", data={"name": "allowed"}, headers={"X-CSRF-Token": csrf}
    )
    assert made.status == 201

    # An error from the API is shown as its message, not as a stack or a code.
    p.fill("input[name=name]", "shop")
    p.click("button:has-text('Create project')")
    expect(p.locator(".flash-item.error")).to_contain_text("Project 'shop' already exists")

    # A log-in page reached with a foreign `next` ends on the lab's own page.
    p.context.clear_cookies()
    p.goto("/login?next=https://evil.example/steal")
    log_in(p)
    expect(p).to_have_url(f"{url}/projects")


@browser_test
def test_admin_pages_tokens_and_a_phone(page: Page, lab_process: LabProcess) -> None:
    p = page
    url = lab_process.url
    p.goto("/login")
    log_in(p)
    expect(p).to_have_url(f"{url}/projects")
    shot(p, "projects-empty")

    # Users: list and create.
    p.click("nav >> text=Users")
    expect(p).to_have_url(f"{url}/admin/users")
    p.fill("input[name=username]", "alice")
    p.fill("input[name=password]", "short")
    p.click("button:has-text('Create user')")
    # The browser's own check stops a too short password before it is sent.
    expect(p.locator("#users-table tr[data-user=alice]")).to_have_count(0)
    p.fill("input[name=password]", "alice-password")
    p.click("button:has-text('Create user')")
    expect(p.locator("#users-table tr[data-user=alice]")).to_contain_text("user")
    shot(p, "users")

    # A project with a member, then the member's view of it.
    p.goto("/projects")
    p.fill("input[name=name]", "team")
    p.click("button:has-text('Create project')")
    expect(p).to_have_url(f"{url}/projects/team")
    p.fill("#members-card input[name=user]", "alice")
    p.click("button:has-text('Add member')")
    expect(p.locator(".members")).to_contain_text("alice")

    # My tokens: create (shown once), list, revoke.
    open_user_menu(p)
    p.click("text=My API tokens")
    expect(p).to_have_url(f"{url}/tokens")
    p.fill("input[name=name]", "ci pipeline")
    p.select_option("select[name=expiresIn]", "604800")
    p.click("button:has-text('Create token')")
    secret = p.locator("#secret-value")
    expect(secret).to_have_text(re.compile(r"^\S{20,}$"))
    token = secret.inner_text()
    assert (
        httpx.get(f"{url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}).json()[
            "data"
        ]["username"]
        == "admin"
    )
    p.click("#secret-dialog button:has-text('Done')")
    token_row = p.locator("#tokens-table tr:has-text('ci pipeline')")
    expect(token_row).to_be_visible()
    assert token not in p.content()
    shot(p, "tokens")
    token_row.locator("button:has-text('Revoke')").click()
    expect(token_row).to_have_count(0)
    assert (
        httpx.get(f"{url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )

    # The project page on a phone.
    p.set_viewport_size({"width": 390, "height": 844})
    p.goto("/projects/team")
    expect(p.locator("#deploy-form")).to_be_visible()
    shot(p, "project-phone")

    # Alice sees the project she was added to, and no Users page.
    p.context.clear_cookies()
    p.set_viewport_size({"width": 1280, "height": 860})
    p.goto("/projects")
    log_in(p, "alice", "alice-password")
    expect(p.locator("#projects-table")).to_contain_text("team")
    expect(p.locator("nav >> text=Users")).to_have_count(0)
    p.goto("/admin/users")
    expect(p.locator(".notice.error")).to_contain_text("Only an admin")

    # Alice changes her password on her account page.
    p.goto("/projects")
    open_user_menu(p)
    p.click("text=Change password")
    expect(p).to_have_url(f"{url}/account")
    form = p.locator("#password-form")
    form.locator("input[name=currentPassword]").fill("not-her-password")
    form.locator("input[name=password]").fill("alice-new password")
    form.locator("input[data-same-as]").fill("alice-new password")
    form.locator("button[type=submit]").click()
    expect(p.locator(".flash-item.error")).to_contain_text("current password is wrong")
    form.locator("input[name=currentPassword]").fill("alice-password")
    form.locator("input[data-same-as]").fill("alice-new-password")
    form.locator("button[type=submit]").click()
    expect(p.locator(".flash-item.error").last).to_contain_text("differ")
    form.locator("input[data-same-as]").fill("alice-new password")
    form.locator("button[type=submit]").click()
    expect(p.locator(".flash-item.ok")).to_contain_text("Password changed")
    shot(p, "account")
    # Her session goes on; the new password (spaces and all) logs in, the old one does not.
    p.goto("/projects")
    expect(p.locator("#projects-table")).to_contain_text("team")
    login = f"{url}/api/auth/login"
    assert httpx.get(login, auth=("alice", "alice-new password")).status_code == 200
    assert httpx.get(login, auth=("alice", "alice-password")).status_code == 401
