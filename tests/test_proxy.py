"""The authenticating reverse proxy, end to end with real servers on 127.0.0.1.

The proxy (`ProxyApp` under uvicorn with uvloop and httptools) and the upstream service
(an aiohttp app) each run in their own process, as in production; the test talks HTTP and
WebSocket to them. See tests/upstreams.py for both.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin, Subprotocol

from servicelab.proxy.headers import rewrite_location, strip_lab_cookie, strip_lab_query

UPSTREAMS = Path(__file__).with_name("upstreams.py")
ROOT = Path(__file__).resolve().parent.parent

USER_TOKEN = "tok-alpha-user-5f1c"
PROJECT_TOKEN = "tok-alpha-project-9a2e"
BETA_TOKEN = "tok-beta-user-77d0"
TOKENS = {
    USER_TOKEN: ["ada", "alpha"],
    PROJECT_TOKEN: [None, "alpha"],
    BETA_TOKEN: ["bob", "beta"],
}
ECHO = "/api/projects/alpha/services/echo/8080"
FULL = "/api/projects/alpha/services/full/9000"
PATTERN = bytes(range(256)) * 4096  # the same 1 MiB pattern as tests/upstreams.py
GIB = 1 << 30


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


def _start(*args: str, deadline: float = 30.0) -> Proc:
    log = Path(tempfile.mkstemp(prefix="servicelab-proxy-test-", suffix=".log")[1])
    popen = subprocess.Popen(
        [sys.executable, str(UPSTREAMS), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=ROOT,
    )
    assert popen.stdout is not None
    end = time.monotonic() + deadline
    line = b""
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or popen.poll() is not None:
            popen.kill()
            raise AssertionError(f"{args[0]} did not start: {log.read_text()}")
        ready, _, _ = select.select([popen.stdout], [], [], left)
        if ready:
            line += os.read(popen.stdout.fileno(), 1)
    assert line.startswith(b"LISTENING "), line
    return Proc(popen, int(line.split()[1]), log)


def _stop(proc: Proc) -> None:
    proc.popen.terminate()
    try:
        proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    proc = _start("upstream")
    yield proc
    _stop(proc)


def _config(upstream: Proc, **extra: object) -> str:
    route = {"host": "127.0.0.1", "port": upstream.port}
    config = {
        "routes": {
            "alpha/echo/8080": route,
            "alpha/full/9000": {**route, "strip": False},
            "beta/echo/8080": route,
            "alpha/closed/8080": {"host": "127.0.0.1", "port": _closed_port()},
        },
        "starting": ["alpha/starting/8080"],
        "tokens": TOKENS,
        "allowed_origins": ["https://notebooks.example.org"],
        **extra,
    }
    return json.dumps(config)


@pytest.fixture(scope="module")
def proxy(upstream: Proc) -> Iterator[Proc]:
    proc = _start("proxy", _config(upstream))
    yield proc
    _stop(proc)
    # Whatever happened in the module, no token ever reached the log.
    log = proc.log.read_text()
    for token in TOKENS:
        assert token not in log


@pytest.fixture(scope="module")
def strict_proxy(upstream: Proc) -> Iterator[Proc]:
    """A proxy with a short read timeout, behind a trusted TLS front proxy."""
    proc = _start("proxy", _config(upstream, read_timeout=1.0, trust_forwarded_headers=True))
    yield proc
    _stop(proc)


@pytest.fixture()
def client(proxy: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        yield c


#: The lab under a name that is not loopback, without a service domain: no service origin
#: can be formed, so the path route keeps ML Lab's cookie and `lab_token` ways (served
#: sandboxed). On a loopback host, browsers are sent to the service's own origin instead.
FALLBACK = {"Host": "lab.example"}


def _bearer(token: str = USER_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _echo(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _headers(echo: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# -- pure functions ---------------------------------------------------------------------


def test_strip_lab_cookie_keeps_the_others_byte_for_byte() -> None:
    assert strip_lab_cookie(b'a=1;  lab_access_token=t; sid="x y";z') == (
        "t",
        b'a=1; sid="x y";z',
    )
    assert strip_lab_cookie(b"lab_access_token=t; a=1") == ("t", b"a=1")
    assert strip_lab_cookie(b"lab_access_token=t") == ("t", b"")
    assert strip_lab_cookie(b"x_lab_access_token=t") == (None, b"x_lab_access_token=t")


def test_strip_lab_query() -> None:
    assert strip_lab_query(b"a=%20&lab_token=t%2B&b=2") == ("t+", b"a=%20&b=2")
    assert strip_lab_query(b"lab%5Ftoken=t") == ("t", b"")
    assert strip_lab_query(b"x=lab_token") == (None, b"x=lab_token")


def test_rewrite_location() -> None:
    prefix = b"/api/projects/p/services/s/80"
    origins = (b"http://127.0.0.1:9000", b"http://lab.example", b"https://lab.example")

    def rewrite(location: bytes, strip: bool = True) -> bytes:
        return rewrite_location(location, origins, prefix, strip)

    assert rewrite(b"http://127.0.0.1:9000/x?y") == prefix + b"/x?y"
    assert rewrite(b"HTTP://127.0.0.1:9000") == prefix + b"/"
    assert rewrite(b"https://lab.example/items/") == prefix + b"/items/"
    assert rewrite(b"/x") == prefix + b"/x"
    assert rewrite(prefix + b"/x") == prefix + b"/x"
    assert rewrite(b"/x", strip=False) == b"/x"
    assert rewrite(b"http://127.0.0.1:9000/x", strip=False) == b"/x"
    assert rewrite(b"x") == b"x"
    assert rewrite(b"//evil/x") == b"//evil/x"
    assert rewrite(b"http://127.0.0.1:90001/") == b"http://127.0.0.1:90001/"
    assert rewrite(b"http://lab.example.evil/") == b"http://lab.example.evil/"


# -- routing and auth -------------------------------------------------------------------


def test_other_paths_reach_the_wrapped_app(client: httpx.Client) -> None:
    assert client.get("/").text == "inner app"
    assert client.get("/api/projects/alpha/services").text == "inner app"


@pytest.mark.parametrize(
    "how",
    ["bearer", "bare", "cookie", "query-post"],
)
def test_each_way_of_passing_a_token(client: httpx.Client, how: str) -> None:
    url, headers = f"{ECHO}/who", {}
    if how == "bearer":
        headers = _bearer()
    elif how == "bare":
        headers = {"Authorization": USER_TOKEN}
    elif how == "cookie":
        headers = {"Cookie": f"lab_access_token={USER_TOKEN}", **FALLBACK}
    method = "GET"
    if how == "query-post":
        url, method = f"{url}?lab_token={USER_TOKEN}", "POST"
    echo = _echo(client.request(method, url, headers=headers))
    assert echo["raw_path"] == "/who"
    assert _headers(echo)["x-lab-user"] == ["ada"]
    assert _headers(echo)["x-lab-project"] == ["alpha"]


def test_lab_token_on_get_sets_cookie_and_redirects(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}/x/?a=1&lab_token={USER_TOKEN}&b=%20", headers=FALLBACK)
    assert response.status_code in (302, 303)
    assert response.headers["location"] == f"{ECHO}/x/?a=1&b=%20"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"lab_access_token={USER_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here
    followed = client.get(
        response.headers["location"], headers={"Cookie": cookie.split(";")[0], **FALLBACK}
    )
    assert _echo(followed)["raw_path"] == "/x/?a=1&b=%20"
    assert followed.headers["content-security-policy"].startswith("sandbox")


def test_lab_token_cookie_is_secure_over_https(strict_proxy: Proc) -> None:
    response = httpx.get(
        f"{strict_proxy.url}{ECHO}/?lab_token={USER_TOKEN}",
        headers={"X-Forwarded-Proto": "https", **FALLBACK},
    )
    assert response.status_code in (302, 303)
    assert "Secure" in response.headers["set-cookie"]


def test_service_host_cookie_is_host_prefixed_and_secure_over_https(strict_proxy: Proc) -> None:
    """On a service's own host `lab_token` becomes that host's cookie: `__Host-` prefixed
    and Secure under https, HttpOnly, SameSite=Lax, no Domain; it opens that service."""
    host = {"Host": "echo--alpha.localhost", "X-Forwarded-Proto": "https"}
    response = httpx.get(f"{strict_proxy.url}{ECHO}/who?lab_token={USER_TOKEN}", headers=host)
    assert response.status_code == 302
    assert response.headers["location"] == f"{ECHO}/who"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-servicelab_service=")
    assert {"Path=/", "HttpOnly", "SameSite=Lax", "Secure"} <= set(cookie.split("; "))
    assert "domain" not in cookie.lower() and USER_TOKEN not in cookie
    value = cookie.split(";")[0]
    echo = _echo(
        httpx.get(f"{strict_proxy.url}{ECHO}/who", headers={**host, "Cookie": f"{value}; a=1"})
    )
    assert _headers(echo)["cookie"] == ["a=1"] and _headers(echo)["x-lab-user"] == ["ada"]
    # The same cookie on another service's host, or the lab's API there: nothing.
    other = {**host, "Host": "echo--beta.localhost", "Cookie": value}
    assert (
        httpx.get(
            f"{strict_proxy.url}/api/projects/beta/services/echo/8080/", headers=other
        ).status_code
        == 401
    )
    assert (
        httpx.get(f"{strict_proxy.url}/metrics", headers={**host, "Cookie": value}).status_code
        == 404
    )


def test_no_token_gives_401_envelope_to_api_clients(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}/", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None and body["errors"]["type"] == "unauthorized"
    assert client.get(f"{ECHO}/", headers=_bearer("nonsense")).status_code == 401


def test_browser_without_token_goes_to_login(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}/a b?x=1", headers={"Accept": "text/html,*/*"})
    assert response.status_code in (302, 303)
    assert response.headers["location"] == f"/login?next={ECHO}/a%2520b%3Fx%3D1"


def test_token_of_another_project_is_forbidden(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}/", headers=_bearer(BETA_TOKEN))
    assert response.status_code == 403
    assert response.json()["errors"]["type"] == "forbidden"
    ok = client.get("/api/projects/beta/services/echo/8080/", headers=_bearer(BETA_TOKEN))
    assert _headers(_echo(ok))["x-lab-project"] == ["beta"]


def test_no_lab_credential_reaches_the_service(client: httpx.Client) -> None:
    cookies = f'theme=dark;  lab_access_token={USER_TOKEN}; sid="a b"'
    for headers, query in [
        ({**_bearer(), "Cookie": cookies}, f"lab_token={USER_TOKEN}&keep=1"),
        ({"Cookie": cookies, **FALLBACK}, "keep=1"),
    ]:
        echo = _echo(client.post(f"{ECHO}/p?{query}", headers=headers, content=b"body"))
        seen = json.dumps(echo)
        for token in TOKENS:
            assert token not in seen
        assert _headers(echo)["cookie"] == ['theme=dark; sid="a b"']
        assert "authorization" not in _headers(echo)
        assert echo["raw_path"] == "/p?keep=1"
        assert echo["body"] == "body"


def test_the_services_own_authorization_passes(client: httpx.Client) -> None:
    lab_cookie = {"Cookie": f"lab_access_token={USER_TOKEN}", **FALLBACK}
    for own in ["Basic dXNlcjpwdw==", "Bearer the-services-own-api-key"]:
        echo = _echo(client.get(f"{ECHO}/", headers={**lab_cookie, "Authorization": own}))
        assert _headers(echo)["authorization"] == [own]
        assert "cookie" not in _headers(echo)


def test_forged_forwarding_and_lab_headers_are_replaced(client: httpx.Client) -> None:
    forged = {
        "X-Lab-User": "mallory",
        "X-Lab-Project": "beta",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/evil",
    }
    headers = _headers(_echo(client.get(f"{ECHO}/", headers={**_bearer(), **forged})))
    assert headers["x-lab-user"] == ["ada"]
    assert headers["x-lab-project"] == ["alpha"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [client.base_url.netloc.decode()]
    assert headers["x-forwarded-prefix"] == [ECHO]
    assert headers["host"] == [client.base_url.netloc.decode()]
    # A project token has no user behind it.
    project = _headers(_echo(client.get(f"{ECHO}/", headers=_bearer(PROJECT_TOKEN))))
    assert "x-lab-user" not in project


def test_trusted_front_proxy_headers_are_extended(strict_proxy: Proc) -> None:
    response = httpx.get(
        f"{strict_proxy.url}{ECHO}/",
        headers={**_bearer(), "X-Forwarded-For": "10.1.2.3", "X-Forwarded-Host": "lab.example"},
    )
    headers = _headers(_echo(response))
    assert headers["x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert headers["x-forwarded-host"] == ["lab.example"]


def test_hop_by_hop_headers_are_not_forwarded(client: httpx.Client) -> None:
    headers = {
        **_bearer(),
        "Connection": "keep-alive, X-Private",
        "X-Private": "secret",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eDp5",
        "X-Kept": "yes",
    }
    seen = _headers(_echo(client.get(f"{ECHO}/", headers=headers)))
    for name in ["x-private", "keep-alive", "proxy-authorization"]:
        assert name not in seen
    assert seen["x-kept"] == ["yes"]


def test_missing_trailing_slash_redirects(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}?q=1", headers=_bearer())
    assert response.status_code in (307, 308)
    assert response.headers["location"] == f"{ECHO}/?q=1"


def test_relative_links_work_under_the_prefix(client: httpx.Client) -> None:
    page = client.get(f"{ECHO}/page/", headers=_bearer())
    assert 'href="other"' in page.text
    link = urljoin(f"{ECHO}/page/", "other")
    assert _echo(client.get(link, headers=_bearer()))["raw_path"] == "/page/other"


def test_strip_prefix_on_and_off_keep_raw_bytes(client: httpx.Client) -> None:
    raw = "/a%2Fb/%7E c?x=%26&y=%2B"
    stripped = _echo(client.get(httpx.URL(f"{ECHO}{raw}"), headers=_bearer()))
    assert stripped["raw_path"] == raw.replace(" ", "%20")
    whole = _echo(client.get(httpx.URL(f"{FULL}{raw}"), headers=_bearer()))
    assert whole["raw_path"] == f"{FULL}{raw}".replace(" ", "%20")
    assert _headers(whole)["x-forwarded-prefix"] == [FULL]


@pytest.mark.parametrize(
    ("base", "kind", "expected"),
    [
        (ECHO, "absolute", f"{ECHO}/target?x=1"),
        (ECHO, "path", f"{ECHO}/target"),
        (ECHO, "relative", "target"),
        (ECHO, "foreign", "https://example.org/elsewhere"),
        (ECHO, "prefixed", f"{ECHO}/target"),
        (ECHO, "host", f"{ECHO}/target"),
        (FULL, "path", "/target"),
        (FULL, "prefixed", f"{FULL}/target"),
    ],
)
def test_location_rewriting(client: httpx.Client, base: str, kind: str, expected: str) -> None:
    response = client.get(f"{base}/redirect/{kind}", headers=_bearer())
    assert response.status_code == 302
    assert response.headers["location"] == expected


def test_repeated_response_headers_are_kept(client: httpx.Client) -> None:
    response = client.get(f"{ECHO}/setcookies", headers=_bearer())
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert response.headers.get_list("x-repeated") == ["one", "two"]


def test_head_and_expect_continue(client: httpx.Client) -> None:
    head = client.head(f"{ECHO}/setcookies", headers=_bearer())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "7"
    echo = _echo(
        client.put(f"{ECHO}/up", headers={**_bearer(), "Expect": "100-continue"}, content=b"x" * 10)
    )
    assert echo["body"] == "x" * 10 and "expect" not in _headers(echo)


def test_bodiless_statuses_and_connections_the_service_closes(client: httpx.Client) -> None:
    for path in ["/status/204", "/status/304", "/status/200?close=1", "/status/204?close=1"]:
        for _ in range(3):  # the pooled connection must be fine (or replaced) each time
            response = client.get(f"{ECHO}{path}", headers=_bearer())
            assert response.status_code == int(path[8:11]), path
            assert response.headers["x-status"] == path[8:11]
    assert _echo(client.get(f"{ECHO}/after", headers=_bearer()))["raw_path"] == "/after"


def test_kept_alive_connections_the_service_closed_are_replaced(
    client: httpx.Client, upstream: Proc
) -> None:
    for _ in range(5):
        assert _echo(client.get(f"{ECHO}/one", headers=_bearer()))["raw_path"] == "/one"
        assert httpx.get(f"{upstream.url}/hang-up-idle").text == "closed"
        # Whether the proxy has seen the hang-up yet or not, the next request works.
        assert _echo(client.get(f"{ECHO}/two", headers=_bearer()))["raw_path"] == "/two"


# -- errors -----------------------------------------------------------------------------


def test_unknown_service_or_port_is_404(client: httpx.Client) -> None:
    for path in ["/api/projects/alpha/services/nope/8080/", f"{ECHO[:-4]}8081/"]:
        response = client.get(path, headers=_bearer())
        assert response.status_code == 404
        assert response.json()["errors"]["type"] == "not_found"


def test_starting_service_is_503_with_retry_after(client: httpx.Client) -> None:
    response = client.get("/api/projects/alpha/services/starting/8080/", headers=_bearer())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["errors"]["type"] == "service_unavailable"


def test_closed_upstream_port_is_502(client: httpx.Client) -> None:
    response = client.get("/api/projects/alpha/services/closed/8080/", headers=_bearer())
    assert response.status_code == 502
    assert response.json()["errors"]["type"] == "bad_gateway"


def test_slow_upstream_is_504_with_a_read_timeout(strict_proxy: Proc) -> None:
    response = httpx.get(f"{strict_proxy.url}{ECHO}/slow?seconds=30", headers=_bearer())
    assert response.status_code == 504
    assert response.json()["errors"]["type"] == "gateway_timeout"


def test_metrics_count_requests_per_service(client: httpx.Client) -> None:
    client.get(f"{ECHO}/", headers=_bearer())
    text = client.get("/metrics").text
    assert (
        'servicelab_proxy_requests_total{code="200",port="8080",project="alpha",service="echo"}'
        in text
    )
    assert "servicelab_proxy_request_duration_seconds_bucket" in text
    assert "servicelab_proxy_sent_bytes_total" in text


# -- streaming --------------------------------------------------------------------------


def test_sse_events_arrive_one_by_one(client: httpx.Client) -> None:
    key = f"sse-{time.monotonic_ns()}"
    with client.stream("GET", f"{ECHO}/sse?id={key}", headers=_bearer()) as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        assert next(lines) == "data: one"
        # The service sends event 2 only after this second request: had the proxy held
        # event 1 back, this test would hang (and time out) instead of passing.
        assert client.get(f"{ECHO}/release?id={key}", headers=_bearer()).text == "released"
        assert [line for line in lines if line] == ["data: two"]


def test_a_client_leaving_a_stream_stops_it(client: httpx.Client) -> None:
    key = f"gone-{time.monotonic_ns()}"
    with client.stream("GET", f"{ECHO}/sse?id={key}", headers=_bearer()) as response:
        assert next(response.iter_lines()) == "data: one"
    # Leaving the block closes the connection mid-stream; the proxy notices, stops
    # reading the service (which would never end here) and counts a 499.
    gone = 'servicelab_proxy_requests_total{code="499",port="8080",project="alpha",service="echo"}'
    end = time.monotonic() + 10
    while gone not in client.get("/metrics").text:
        assert time.monotonic() < end, "the abandoned stream was never ended"
        time.sleep(0.05)  # polling interval, bounded by the deadline above


@pytest.mark.slow
def test_one_gib_up_and_down_with_bounded_memory(upstream: Proc) -> None:
    proxy = _start("proxy", _config(upstream))
    try:
        before = proxy.peak_rss_kib()

        def body() -> Iterator[bytes]:
            for _ in range(GIB // len(PATTERN)):
                yield PATTERN

        with httpx.Client(base_url=proxy.url, timeout=120) as c:
            response = c.post(f"{ECHO}/upload", headers=_bearer(), content=body())
            expected_crc = 0
            for _ in range(GIB // len(PATTERN)):
                expected_crc = zlib.crc32(PATTERN, expected_crc)
            assert response.json() == {"size": GIB, "crc": expected_crc}

            crc, size = 0, 0
            with c.stream("GET", f"{ECHO}/download?size={GIB}", headers=_bearer()) as down:
                assert down.headers["content-length"] == str(GIB)
                for chunk in down.iter_raw():
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
            assert (size, crc) == (GIB, expected_crc)
        peak = proxy.peak_rss_kib()
        # Two GiB went through; the proxy grew by a small constant at most.
        assert peak - before < 64 * 1024, (before, peak)
    finally:
        _stop(proxy)


# -- WebSockets -------------------------------------------------------------------------


def test_websocket_echo_subprotocol_and_close_codes(proxy: Proc) -> None:
    with ws_connect(
        f"{proxy.ws_url}{ECHO}/ws",
        additional_headers=_bearer(),
        subprotocols=[Subprotocol("chat.v1"), Subprotocol("other")],
    ) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
        headers = {k.lower(): v for k, v in json.loads(_ws_roundtrip(ws, "headers")).items()}
        assert headers["x-lab-user"] == "ada" and "authorization" not in headers
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    # The client's close code reaches the service too.
    with ws_connect(f"{proxy.ws_url}{ECHO}/ws-close", additional_headers=_bearer()) as ws:
        ws.close(code=4002)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        code = httpx.get(f"{proxy.url}{ECHO}/last-close", headers=_bearer()).json()["code"]
        if code is not None:
            break
    assert code == 4002


def _ws_roundtrip(ws: object, text: str) -> str:
    ws.send(text)  # type: ignore[attr-defined]
    reply = ws.recv(timeout=10)  # type: ignore[attr-defined]
    assert isinstance(reply, str)
    return reply


def test_websocket_with_cookie_must_come_from_an_allowed_origin(proxy: Proc) -> None:
    cookie = {"Cookie": f"lab_access_token={USER_TOKEN}"}
    # On a loopback host a browser's WebSocket (it sends Origin) belongs on the service's
    # own origin; a script's (no Origin) is served as before.
    url = f"{proxy.ws_url}{ECHO}/ws"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers=cookie, origin=Origin(proxy.url))
    assert refused.value.response.status_code == 403
    assert "echo--alpha.localhost" in refused.value.response.body.decode()
    with ws_connect(url, additional_headers=cookie) as ws:
        assert _ws_roundtrip(ws, "script") == "script"
    # In the fallback (no service origin), the cookie's WebSocket must come from the lab.
    host = f"lab.example:{proxy.port}"
    url = f"ws://{host}{ECHO}/ws"

    def fallback(origin: str) -> Any:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        return ws_connect(url, sock=sock, additional_headers=cookie, origin=Origin(origin))

    with pytest.raises(InvalidStatus) as refused:
        fallback("http://evil.example")
    assert refused.value.response.status_code == 403
    for origin in [f"http://{host}", "https://notebooks.example.org"]:
        with fallback(origin) as ws:
            assert _ws_roundtrip(ws, "same origin") == "same origin"
    # A token in the header is no ambient credential: any origin may use it.
    url = f"{proxy.ws_url}{ECHO}/ws"
    with ws_connect(url, additional_headers=_bearer(), origin=Origin("http://evil.example")) as ws:
        assert _ws_roundtrip(ws, "x") == "x"


def test_websocket_to_a_plain_http_endpoint_is_a_bad_gateway(proxy: Proc) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"{proxy.ws_url}{ECHO}/not-a-websocket", additional_headers=_bearer())
    assert refused.value.response.status_code == 502


def test_websocket_without_token_is_refused(proxy: Proc) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"{proxy.ws_url}{ECHO}/ws")
    assert refused.value.response.status_code == 401
