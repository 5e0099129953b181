"""Popular apps work behind the proxy on the first try: each recipe of examples/ deployed
as docs/apps.md says, and used in Chromium through the proxy (WebSockets and SSE included).

All recipes are deployed at once into one lab (their installs run in parallel, from the
local runtime's shared uv cache after the first run) and checked in one browser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from .browsertools import chromium
from .labtools import ROOT, LabProcess, stop_local_services, wait_until

EXAMPLES = ROOT / "examples"
#: name -> (example folder, keep the route prefix) as docs/apps.md's table says.
RECIPES = {
    "streamlit": ("streamlit-app", True),
    "jupyterlab": ("jupyterlab", True),
    "gradio": ("gradio-app", False),
    "fastapi": ("fastapi-docs", True),
    "dash": ("dash-app", False),
    "panel": ("panel-app", True),
}
INSTALL_TIMEOUT = 900
#: A first page load of a big app on a loaded 2-core machine takes a while.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module", params=["embedded", "nginx"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabProcess]:
    """A lab on each proxy plane (the apps live in sandboxes with networks of their own)."""
    data_dir = tmp_path_factory.mktemp(f"apps-lab-{request.param}") / "data"
    data_dir.mkdir()
    env = {"SERVICELAB_RUNTIME": "local", "SERVICELAB_PROXY": request.param}
    started = LabProcess(data_dir, env=env).start()
    yield started
    started.stop()
    stop_local_services(data_dir)


@pytest.fixture(scope="module")
def deployed(lab: LabProcess) -> dict[str, dict]:
    """Every recipe, deployed at once; each one's service once it runs (or its failure)."""
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "apps"}).status_code == 201
        for name, (folder, keep) in RECIPES.items():
            spec = {"code": str(EXAMPLES / folder), "stripPrefix": not keep}
            r = api.put(f"/api/projects/apps/services/{name}", json=spec)
            assert r.status_code == 201, r.text
        found: dict[str, dict] = {}

        def all_settled() -> bool:
            for name in RECIPES:
                service = api.get(f"/api/projects/apps/services/{name}").json()["data"]
                if service["status"] in ("running", "failed", "unhealthy"):
                    found[name] = service
            return len(found) == len(RECIPES)

        wait_until(all_settled, timeout=INSTALL_TIMEOUT, interval=1.0, what="apps settled")
        return found


@pytest.fixture(scope="module")
def browser(lab: LabProcess) -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(lab: LabProcess, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(base_url=lab.url)
    context.set_default_timeout(60_000)
    outside: list[str] = []

    def only_the_lab(route: Route) -> None:
        # Offline means offline: a recipe that fetches from a CDN fails here. The lab and
        # its service origins (<service>--<project>.localhost) share the lab's port.
        url = urlsplit(route.request.url)
        host = url.hostname or ""
        if url.port == lab.port and (host == "127.0.0.1" or host.endswith("localhost")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_lab)
    page = context.new_page()
    yield page
    context.close()
    assert not outside, f"the app asked outside the lab: {outside[:5]}"


def open_app(page: Page, lab: LabProcess, name: str, rest: str = "") -> None:
    """The app's page, logged in by ML Lab's `lab_token` parameter (it sets the cookie)."""
    page.goto(f"/api/projects/apps/services/{name}/8091/{rest}?lab_token={lab.admin_token}")


def check_streamlit(page: Page) -> None:
    expect(page.get_by_text("Hello, world!")).to_be_visible()  # rendered over the WebSocket
    name = page.locator("input[type=text]").first
    name.fill("lab")
    name.press("Enter")
    expect(page.get_by_text("Hello, lab!")).to_be_visible()


def check_jupyterlab(page: Page) -> None:
    expect(page.locator(".jp-Launcher")).to_be_visible()
    expect(page.locator(".jp-LauncherCard").first).to_be_visible()


def check_gradio(page: Page) -> None:
    boxes = page.locator("textarea")
    boxes.first.fill("lab")
    page.get_by_role("button", name="Submit").click()  # answered through the SSE queue
    expect(boxes.nth(1)).to_have_value("Hello, lab!")


def check_fastapi(page: Page) -> None:
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.get_by_text("/add")).to_be_visible()


def check_dash(page: Page) -> None:
    expect(page.get_by_text("Hello, world!")).to_be_visible()  # a callback answered
    page.locator("#name").fill("lab")
    expect(page.get_by_text("Hello, lab!")).to_be_visible()


def check_panel(page: Page) -> None:
    expect(page.get_by_text("Hello, world!")).to_be_visible()  # Bokeh's WebSocket


CHECKS: dict[str, tuple[str, Callable[[Page], None]]] = {
    "streamlit": ("", check_streamlit),
    "jupyterlab": ("lab", check_jupyterlab),
    "gradio": ("", check_gradio),
    "fastapi": ("docs", check_fastapi),
    "dash": ("", check_dash),
    "panel": ("", check_panel),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_works_in_chromium_through_the_proxy(
    name: str, lab: LabProcess, deployed: dict[str, dict], page: Page
) -> None:
    service = deployed[name]
    assert service["status"] == "running", (service["status"], service["reason"])
    rest, check = CHECKS[name]
    open_app(page, lab, name, rest)
    check(page)
    # An update that names only the environment keeps the prefix choice: the app works on.
    with lab.client() as api:
        r = api.put(f"/api/projects/apps/services/{name}", json={"env": {"UPDATED": "1"}})
        assert r.status_code == 200 and r.json()["data"]["stripPrefix"] is not RECIPES[name][1]
        wait_until(
            lambda: (
                (s := api.get(f"/api/projects/apps/services/{name}").json()["data"])["status"]
                == "running"
                and s["configuration"].get("UPDATED") == "1"
            ),
            timeout=INSTALL_TIMEOUT,
            interval=0.5,
            what=f"{name} updated and running",
        )
    open_app(page, lab, name, rest)
    check(page)
