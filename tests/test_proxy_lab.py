"""The proxy in the real lab: services started by the local runtime, reached on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .labtools import ROOT, LabProcess, wait_until

JUPYTER = str(ROOT / "tests" / "services" / "jupyter")
PREFIX = "/api/projects/alpha/services/echo/8091"
#: The lab under a name that is not loopback (no service origin can be formed): there the
#: path route keeps ML Lab's cookie and `lab_token` ways, served sandboxed.
FALLBACK = {"Host": "lab.example"}


@pytest.fixture(scope="module")
def lab(proxy_lab: LabProcess) -> LabProcess:
    """The proxy lab of each plane (see conftest.py): every promise of the proxy is
    checked on the embedded plane and on nginx."""
    return proxy_lab


def project_token(lab: LabProcess, project: str) -> str:
    with lab.client() as api:
        return str(api.get(f"/api/projects/{project}/token").json()["data"])


def headers_seen(response: httpx.Response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for key, value in response.json()["headers"]:
        seen.setdefault(key.lower(), []).append(value)
    return seen


def test_each_way_of_passing_a_token(lab: LabProcess) -> None:
    token = project_token(lab, "alpha")
    url = f"{lab.url}{PREFIX}/"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).text == "ok"
    assert httpx.get(url, headers={"Authorization": token}).text == "ok"
    cookie = {"Cookie": f"lab_access_token={token}", **FALLBACK}
    assert httpx.get(url, headers=cookie).text == "ok"
    via_query = httpx.get(url, params={"lab_token": token}, headers=FALLBACK)
    assert via_query.status_code == 302
    cookie["Cookie"] = via_query.headers["set-cookie"].split(";")[0]
    assert httpx.get(url, headers=cookie).text == "ok"
    r = httpx.get(url)
    assert r.status_code == 401
    assert r.json()["errors"]["code"] == 401
    assert r.json()["errors"]["type"] == "unauthorized"
    assert httpx.get(url, headers={"Authorization": "Bearer slp_forged"}).status_code == 401


def test_lab_token_parameter_sets_cookie_and_is_removed(lab: LabProcess) -> None:
    token = project_token(lab, "alpha")
    # On the lab's path route: a one-time code for the service's own origin.
    r = httpx.get(f"{lab.url}{PREFIX}/headers", params={"lab_token": token, "keep": "1"})
    assert r.status_code == 302 and "set-cookie" not in r.headers
    origin = f"http://echo--alpha.localhost:{lab.port}"
    location = r.headers["location"]
    assert location.startswith(f"{origin}/_servicelab/callback?code=") and token not in location
    # There, the code becomes the service origin's cookie and the clean URL.
    host = {"Host": f"echo--alpha.localhost:{lab.port}"}
    r = httpx.get(lab.url + location[len(origin) :], headers=host)
    assert r.status_code == 302 and r.headers["location"] == f"{PREFIX}/headers?keep=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("servicelab_service=")
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag.lower() in cookie.lower()
    # `lab_token` on the service's own host ends the same way.
    r = httpx.get(f"{lab.url}{PREFIX}/headers?lab_token={token}&keep=1", headers=host)
    assert r.status_code == 302 and r.headers["location"] == f"{PREFIX}/headers?keep=1"
    assert r.headers["set-cookie"].startswith("servicelab_service=")


def test_a_token_of_another_project_is_refused(lab: LabProcess) -> None:
    beta = project_token(lab, "beta")
    r = httpx.get(f"{lab.url}{PREFIX}/", headers={"Authorization": f"Bearer {beta}"})
    # As if `alpha` did not exist: a 403 would tell which project names do.
    assert r.status_code == 404
    assert r.json()["errors"]["message"] == "Project 'alpha' was not found."


def test_browser_without_token_goes_to_login(lab: LabProcess) -> None:
    r = httpx.get(f"{lab.url}{PREFIX}/env", headers={"Accept": "text/html"})
    assert r.status_code in (302, 303, 307)
    assert r.headers["location"].startswith("/login?next=")


def test_no_lab_credential_reaches_the_service(lab: LabProcess) -> None:
    token = project_token(lab, "alpha")
    r = httpx.get(
        f"{lab.url}{PREFIX}/headers",
        headers={
            "Cookie": f"theme=dark; lab_access_token={token}; other=1",
            **FALLBACK,
            "X-Lab-User": "mallory",
            "X-Lab-Project": "beta",
            "X-Forwarded-Prefix": "/evil",
        },
    )
    assert r.status_code == 200
    seen = headers_seen(r)
    assert token not in r.text
    assert seen["cookie"] == ["theme=dark; other=1"]
    assert "authorization" not in seen
    assert seen["x-lab-project"] == ["alpha"]
    assert seen.get("x-lab-user", [""]) != ["mallory"]
    assert seen["x-forwarded-prefix"] == [PREFIX]
    # With the token in the header, the service's own Basic credentials... are not there
    # to confuse: a header that carried the lab token is removed.
    r = httpx.get(f"{lab.url}{PREFIX}/headers", headers={"Authorization": f"Bearer {token}"})
    assert "authorization" not in headers_seen(r)
    assert token not in r.text
    # A service's own Authorization scheme passes untouched when the lab token came another way.
    r = httpx.get(
        f"{lab.url}{PREFIX}/headers",
        headers={"Authorization": "Basic dXNlcjpwdw==", **FALLBACK},
        cookies={"lab_access_token": token},
    )
    assert headers_seen(r)["authorization"] == ["Basic dXNlcjpwdw=="]


def test_user_header_names_the_user(lab: LabProcess) -> None:
    r = httpx.get(
        f"{lab.url}{PREFIX}/headers", headers={"Authorization": f"Bearer {lab.admin_token}"}
    )
    assert headers_seen(r)["x-lab-user"] == ["admin"]


def test_prefix_is_removed_and_relative_links_work(lab: LabProcess) -> None:
    auth = {"Authorization": f"Bearer {lab.admin_token}"}
    r = httpx.get(f"{lab.url}{PREFIX}/headers?x=%2F", headers=auth)
    assert r.json()["path"] == "/headers?x=%2F"
    r = httpx.get(f"{lab.url}{PREFIX}", headers=auth)
    assert r.status_code in (301, 307, 308) and r.headers["location"].endswith(f"{PREFIX}/")
    page = httpx.get(f"{lab.url}{PREFIX}/links", headers=auth)
    assert 'href="env"' in page.text
    linked = httpx.get(str(page.url.join("env")), headers=auth)
    assert linked.status_code == 200 and linked.json()["LAB_PROJECT"] == "alpha"


def test_unknown_service_and_port(lab: LabProcess) -> None:
    auth = {"Authorization": f"Bearer {lab.admin_token}"}
    assert (
        httpx.get(f"{lab.url}/api/projects/alpha/services/ghost/8091/", headers=auth).status_code
        == 404
    )
    r = httpx.get(f"{lab.url}/api/projects/alpha/services/echo/9999/", headers=auth)
    assert r.status_code == 404 and "8091" in r.json()["errors"]["message"]


def test_each_response_has_one_date_the_services_own_first(lab: LabProcess) -> None:
    auth = {"Authorization": f"Bearer {lab.admin_token}"}
    dated = httpx.get(f"{lab.url}{PREFIX}/dated", headers=auth)
    assert dated.status_code == 200
    assert dated.headers.get_list("date") == ["Mon, 01 Jan 2001 00:00:00 GMT"]
    # Without the service's own, the lab's: one, and today's (not a duration measured).
    now = datetime.now(UTC)
    for response in (
        httpx.get(f"{lab.url}{PREFIX}/undated", headers=auth),
        httpx.get(f"{lab.url}{PREFIX}/"),  # the proxy's own 401
        httpx.get(f"{lab.url}/api/projects/alpha/services/ghost/8091/", headers=auth),
        httpx.get(f"{lab.url}/healthz"),  # the lab's API
    ):
        dates = response.headers.get_list("date")
        assert len(dates) == 1, (response.request.url, dates)
        assert abs(parsedate_to_datetime(dates[0]) - now) < timedelta(hours=1)
    # A WebSocket handshake refused (no token): the refusal is dated too.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{lab.port}{PREFIX}/")
    dates = refused.value.response.headers.get_all("date")
    assert refused.value.response.status_code == 401 and len(dates) == 1, dates
    assert abs(parsedate_to_datetime(dates[0]) - now) < timedelta(hours=1)


def test_metrics_need_an_admin(lab: LabProcess) -> None:
    assert httpx.get(f"{lab.url}/metrics").status_code == 401
    member_token = project_token(lab, "alpha")
    assert (
        httpx.get(
            f"{lab.url}/metrics", headers={"Authorization": f"Bearer {member_token}"}
        ).status_code
        == 403
    )
    r = httpx.get(f"{lab.url}/metrics", headers={"Authorization": f"Bearer {lab.admin_token}"})
    assert r.status_code == 200 and 'service="echo"' in r.text


@pytest.mark.slow
def test_jupyter_server_with_prefix_kept(lab: LabProcess) -> None:
    """Jupyter builds absolute links and checks WebSocket origins: it needs the whole path,
    the original Host, and a cookie that the proxy turns into an authorised request."""
    with lab.client() as api:
        r = api.put(
            "/api/projects/alpha/services/notebook",
            json={"code": JUPYTER, "stripPrefix": False, "health": {"startPeriod": 300}},
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: (
                api.get("/api/projects/alpha/services/notebook").json()["data"]["status"]
                == "running"
            ),
            timeout=300,
            interval=0.5,
            what="jupyter running",
        )
    # A browser's way in: the lab's code for the notebook's own origin, then its cookie.
    host = f"notebook--alpha.localhost:{lab.port}"
    base = "/api/projects/alpha/services/notebook/8091"
    r = httpx.get(f"{lab.url}{base}/api/status", params={"lab_token": lab.admin_token})
    callback = r.headers["location"].split(host, 1)[1]
    r = httpx.get(lab.url + callback, headers={"Host": host})
    assert r.status_code == 302, r.text
    cookie = r.headers["set-cookie"].split(";")[0]
    session = httpx.Client(base_url=lab.url, timeout=30, headers={"Host": host, "Cookie": cookie})
    status = session.get(f"{base}/api/status")
    assert status.status_code == 200, status.text
    assert "started" in status.json()
    kernel = session.post(
        f"{base}/api/kernels", json={"name": "python3"}, headers={"Origin": f"http://{host}"}
    )
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]

    ws_url = f"ws://{host}{base}/api/kernels/{kernel_id}/channels"

    def channels(origin: str) -> Any:
        sock = socket.create_connection(("127.0.0.1", lab.port))
        return connect(
            ws_url, sock=sock, additional_headers={"Cookie": cookie}, origin=origin, open_timeout=30
        )

    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {
            "code": "print(6 * 7)",
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
        },
    }
    with channels(f"http://{host}") as ws:
        ws.send(json.dumps(request))
        output = ""
        # The reply (shell channel) may come before the output (iopub): the output is
        # complete when iopub says the kernel is idle again.
        replied = idle = False
        for _ in range(200):
            message = json.loads(ws.recv(timeout=60))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                output += message["content"]["text"]
            replied = replied or message["msg_type"] == "execute_reply"
            idle = idle or (
                message["msg_type"] == "status"
                and message["content"].get("execution_state") == "idle"
            )
            if replied and idle:
                break
    assert output.strip() == "42"

    # The same WebSocket from another site, with the cookie, is refused.
    with pytest.raises(InvalidStatus) as refused:
        channels("http://evil.example")
    assert refused.value.response.status_code == 403
    session.delete(f"{base}/api/kernels/{kernel_id}", headers={"Origin": f"http://{host}"})


def test_a_revoked_token_stops_opening_the_service_within_5_seconds(lab: LabProcess) -> None:
    with lab.client() as api:
        created = api.post("/api/projects/alpha/tokens", json={"name": "short-lived"}).json()
    token, token_id = created["data"]["token"], created["data"]["id"]
    url = f"{lab.url}{PREFIX}/"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=auth).status_code == 200  # now cached as allowed
    with lab.client() as api:
        assert api.delete(f"/api/projects/alpha/tokens/{token_id}").status_code == 200
    wait_until(lambda: httpx.get(url, headers=auth).status_code == 401, timeout=5, what="401")


def test_access_log_has_each_request_soon_without_its_token(embedded_lab: LabProcess) -> None:
    """The embedded plane writes its access lines in batches: each arrives within a second
    or so, with the query string and the token left out (nginx's plane forwards without
    the lab, so its requests are not in the lab's log)."""
    lab, token = embedded_lab, project_token(embedded_lab, "alpha")
    marker = f"/access-{uuid.uuid4().hex}"
    r = httpx.get(f"{lab.url}{PREFIX}{marker}", params={"lab_token": token}, headers=FALLBACK)
    assert r.status_code == 302  # the token moves into the cookie
    cookie = {"Cookie": r.headers["set-cookie"].split(";")[0], **FALLBACK}
    assert httpx.get(f"{lab.url}{PREFIX}{marker}", headers=cookie).status_code == 404  # echo's

    def lines() -> list[str]:
        return [line for line in lab.log().splitlines() if marker in line]

    seen = wait_until(lambda: len(lines()) == 2 and lines(), timeout=5, what="access lines")
    assert [line.split('"')[1] for line in seen] == [f"GET {PREFIX}{marker}"] * 2
    assert [line.split('" ')[1].split()[0] for line in seen] == ["302", "404"]
    assert seen[1].endswith("project=alpha service=echo port=8091")
    assert token not in lab.log() and "lab_token" not in "".join(seen)
