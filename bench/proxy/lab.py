"""The whole lab as a benchmark target: `servicelab serve` on the local runtime, with one
project and one code service that serves the benchmark's files with nginx, reached
through the lab's real path (TokenAuthority, route table, metrics, headers) on either
proxy plane.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench-admin-password"
ROUTE = "/api/projects/bench/services/upstream/8091"

#: The service: nginx on the port the lab gives it, serving the benchmark's folder.
SERVICE_MAIN = """
import os, shutil, sys
port, www, tmp = os.environ["PORT"], os.environ["BENCH_WWW"], os.environ["BENCH_TMP"]
conf = os.path.join(tmp, "service-nginx.conf")
with open(conf, "w") as f:
    f.write(f'''
worker_processes 1; daemon off; pid {tmp}/service-nginx.pid; error_log {tmp}/service.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;
  client_body_temp_path {tmp}/sbody; proxy_temp_path {tmp}/sproxy;
  fastcgi_temp_path {tmp}/sfcgi; uwsgi_temp_path {tmp}/suwsgi; scgi_temp_path {tmp}/sscgi;
  types {{ text/html html; application/octet-stream bin; }}
  server {{ listen 127.0.0.1:{port}; root {www}; }} }}
''')
nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
os.execv(nginx, [nginx, "-c", conf, "-e", os.path.join(tmp, "service.log")])
"""


def _request(url: str, method: str = "GET", body: object = None, token: str = "") -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["data"]
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode()}") from None


def _login(url: str) -> str:
    import base64

    req = urllib.request.Request(f"{url}/api/auth/login")
    req.add_header(
        "Authorization", "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read())["data"])


@contextlib.contextmanager
def whole_lab(tmp: Path, plane: str, port: int, www: Path) -> Iterator[tuple[int, str]]:
    """A running lab on `port`; yields (the pid of its process, a project token)."""
    data = tmp / f"lab-{plane}"
    code = tmp / "service"
    code.mkdir(exist_ok=True)
    (code / "__main__.py").write_text(SERVICE_MAIN)
    svc_tmp = tmp / f"service-{plane}"
    svc_tmp.mkdir(mode=0o777, exist_ok=True)
    env = {
        **os.environ,
        "SERVICELAB_DATA_DIR": str(data),
        "SERVICELAB_PORT": str(port),
        "SERVICELAB_HOST": "127.0.0.1",
        "SERVICELAB_RUNTIME": "local",
        "SERVICELAB_PROXY": plane,
        "SERVICELAB_ADMIN_PASSWORD": PASSWORD,
        "SERVICELAB_UV_CACHE_DIR": str(ROOT / ".cache" / "uv"),
    }
    log = open(tmp / f"lab-{plane}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "servicelab", "serve"], env=env, stdout=log, stderr=log, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    text = Path(log.name).read_text(errors="replace")[-3000:]
                    raise SystemExit(f"the {plane} lab did not start:\n{text}") from None
                time.sleep(0.1)  # polling, with the deadline above
        admin = _login(url)
        _request(f"{url}/api/projects", "POST", {"name": "bench"}, admin)
        _request(
            f"{url}/api/projects/bench/services?name=upstream",
            "POST",
            {"EXECUTE_CODE": str(code), "BENCH_WWW": str(www), "BENCH_TMP": str(svc_tmp)},
            admin,
        )
        token = str(_request(f"{url}/api/projects/bench/token", token=admin))
        deadline = time.monotonic() + 120
        while True:
            req = urllib.request.Request(f"{url}{ROUTE}/1k.html")
            req.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {plane} lab's service did not answer") from None
                time.sleep(0.2)  # polling, with the deadline above
        yield proc.pid, token
    finally:
        with contextlib.suppress(Exception, SystemExit):
            _request(f"{url}/api/projects/bench/services/upstream", "DELETE", token=_login(url))
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        pid_file = data / "nginx" / "nginx.pid"
        if pid_file.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


def nginx_pids(tmp: Path, plane: str) -> list[int]:
    """The nginx plane's master and workers."""
    pid_file = tmp / f"lab-{plane}" / "nginx" / "nginx.pid"
    if not pid_file.exists():
        return []
    master = int(pid_file.read_text().split()[0])
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *(int(c) for c in children)]


def service_address(tmp: Path, plane: str) -> str:
    """host:port of the benchmark's service, from the nginx plane's routes."""
    import re

    routes = (tmp / f"lab-{plane}" / "nginx" / "routes.conf").read_text()
    found = re.search(r"server (127\.0\.0\.1:\d+);", routes)
    assert found, routes
    return found.group(1)
