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

from bench.labapi import PASSWORD, call, login

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/api/projects/bench/services/upstream/8091"

#: The service: nginx on the port the lab gives it, serving the files of its own code
#: folder (the one folder of the benchmark a sandboxed service can read); its
#: configuration and temporary files go to the service's own /tmp.
SERVICE_MAIN = """
import os, shutil, tempfile
port, tmp = os.environ["PORT"], tempfile.gettempdir()
www = os.path.dirname(os.path.abspath(__file__))
conf = os.path.join(tmp, "service-nginx.conf")
with open(os.path.join(os.environ["LAB_DATA_DIR"], "port"), "w") as f:
    f.write(port)
with open(conf, "w") as f:
    f.write(f'''
worker_processes 1; daemon off; pid {tmp}/service-nginx.pid; error_log stderr warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;
  client_body_temp_path {tmp}/sbody; proxy_temp_path {tmp}/sproxy;
  fastcgi_temp_path {tmp}/sfcgi; uwsgi_temp_path {tmp}/suwsgi; scgi_temp_path {tmp}/sscgi;
  types {{ text/html html; application/octet-stream bin; }}
  server {{ listen 127.0.0.1:{port}; root {www}; }} }}
''')
nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
os.execv(nginx, [nginx, "-c", conf, "-e", "stderr"])
"""


@contextlib.contextmanager
def whole_lab(tmp: Path, plane: str, port: int, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """A running lab on `port`; yields (the pid of its process, a project token).

    `root` is the checkout whose code the lab runs (bench/proxy/compare.py: a worktree of
    an older commit); its own source goes first on the path, ahead of the editable
    install, which points at this checkout."""
    data = tmp / f"lab-{plane}"
    code = service_code(tmp)
    env = {
        **os.environ,
        **({"PYTHONPATH": str(root)} if root != ROOT else {}),
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
        [sys.executable, "-m", "servicelab", "serve"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=root,
        # Out of the terminal's process group: a Ctrl-C reaches the benchmark only, which
        # then deletes the service (a lab leaves its services running when it stops).
        start_new_session=True,
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
        admin = login(url)
        call(f"{url}/api/projects", "POST", {"name": "bench"}, admin)
        call(
            f"{url}/api/projects/bench/services?name=upstream",
            "POST",
            {"EXECUTE_CODE": str(code)},
            admin,
        )
        token = str(call(f"{url}/api/projects/bench/token", token=admin))
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
            call(f"{url}/api/projects/bench/services/upstream", "DELETE", token=login(url))
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


def service_code(tmp: Path) -> Path:
    """The service's code folder: its `__main__.py` and the files it serves (1 KB, 64 KB
    and a sparse GiB)."""
    code = tmp / "service"
    if not code.exists():
        code.mkdir(mode=0o755)
        (code / "__main__.py").write_text(SERVICE_MAIN)
        (code / "1k.html").write_bytes(b"x" * 1024)
        (code / "64k.bin").write_bytes(b"x" * 65536)
        with (code / "big.bin").open("wb") as f:
            f.truncate(1 << 30)  # sparse: no GiB written to disk
    return code


def service_address(tmp: Path, plane: str) -> str:
    """host:port of a lab's benchmark service: its port (it writes it into its /data) at
    the address of its instance's own network (sandboxed; see sandbox_netns), else on
    127.0.0.1."""
    service = tmp / f"lab-{plane}" / "services" / "bench--upstream"
    port = (service / "data" / "port").read_text().strip()
    states = sorted((service / "instances").glob("*/state.json"))
    state = json.loads(states[-1].read_text()) if states else {}
    return f"{state.get('address') or '127.0.0.1'}:{port}"
