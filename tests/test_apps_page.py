"""The service page shows how a service is doing, and the deploy form keeps the prefix.

In Chromium (Debian's, through Playwright) against a real lab with the local runtime.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import Page

from .labtools import ROOT, LabProcess, wait_until
from .test_web_ui import browser, log_in, page, shot  # noqa: F401 (fixtures)

ECHO = str(ROOT / "tests" / "services" / "echo-service")
PROBE_COUNTER = str(ROOT / "tests" / "services" / "probe-counter")


def points(p: Page, chart: str) -> int:
    value = p.locator(f"[data-chart={chart}]").get_attribute("data-points")
    return int(value or 0)


def test_charts_fill_with_points_after_traffic_and_the_form_keeps_the_prefix(
    lab_process: LabProcess,
    page: Page,  # noqa: F811 (the fixture imported above)
) -> None:
    with lab_process.client() as api:
        assert api.post("/api/projects", json={"name": "demo"}).status_code == 201
        r = api.post(
            "/api/projects/demo/services", params={"name": "echo"}, json={"EXECUTE_CODE": ECHO}
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: (
                api.get("/api/projects/demo/services/echo").json()["data"]["status"] == "running"
            ),
            timeout=60,
            what="echo running",
        )
        page.goto("/login")
        log_in(page)
        page.goto("/projects/demo/services/echo")
        page.wait_for_selector("[data-chart=requests] canvas")
        assert points(page, "latency") == 0
        for i in range(40):
            path = "crash-not" if i % 10 == 0 else ""
            answer = api.get(f"/api/projects/demo/services/echo/8091/{path}")
            assert answer.status_code in (200, 404)
        wait_until(lambda: points(page, "latency") >= 1, timeout=30, what="latency points")
        wait_until(lambda: points(page, "cpu") >= 1, timeout=30, what="CPU points")
        assert points(page, "memory") >= 1
        summary = page.locator("#doing-summary").inner_text()
        assert "restarts: 0" in summary
        shot(page, "service-page-charts")

        # The deploy form: "Keep the route prefix" under Advanced reaches the service.
        page.goto("/projects/demo")
        form = page.locator("#deploy-form")
        form.locator("input[name=code]").fill(PROBE_COUNTER)
        form.locator("input[name=name]").fill("kept")
        form.locator("input[name=param-key]").nth(0).fill("UNDER_PREFIX")
        form.locator("input[name=param-value]").nth(0).fill("1")
        form.locator("details.advanced summary").click()
        form.locator("input[name=keep-prefix]").check()
        form.locator("button[type=submit]").click()
        kept = wait_until(
            lambda: (
                (s := api.get("/api/projects/demo/services/kept").json()["data"])["status"]
                == "running"
                and s
            ),
            timeout=60,
            what="kept running",
        )
        assert kept["stripPrefix"] is False
        answer = httpx.get(
            f"{lab_process.url}/api/projects/demo/services/kept/8091/stats",
            headers={"Authorization": f"Bearer {lab_process.admin_token}"},
        )
        assert answer.status_code == 200
