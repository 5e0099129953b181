"""Helpers the tests share: free ports, polling with a deadline, a running lab."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-password-for-tests"
#: The test service that echoes what it was sent (tests/services/echo-service).
ECHO = str(ROOT / "tests" / "services" / "echo-service")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled for may not exist yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last_error}")


@dataclass
class LabProcess:
    """A real lab (`servicelab serve`) in a subprocess on a free port."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    database_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    admin_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> LabProcess:
        env = {
            **os.environ,
            "SERVICELAB_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SERVICELAB_DATA_DIR": str(self.data_dir),
            "SERVICELAB_PORT": str(self.port),
            "SERVICELAB_HOST": "127.0.0.1",
            "SERVICELAB_DATABASE_URL": self.database_url,
            "SERVICELAB_RECONCILE_INTERVAL": "0.5",
            # One package cache for every lab of the suite: installs are downloaded once.
            "SERVICELAB_UV_CACHE_DIR": str(ROOT / ".cache" / "uv"),
            **self.env,
        }
        log = open(self.data_dir.parent / f"lab-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "servicelab", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_until(self._ready, timeout=timeout, what=f"lab on port {self.port}")
        except AssertionError:
            self.stop(signal.SIGKILL)  # no fixture teardown follows: leave no lab behind
            raise
        self.admin_token = login(self.url, "admin", ADMIN_PASSWORD)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"lab exited with {self.process.returncode}: {self.log()}")
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def log(self) -> str:
        path = self.data_dir.parent / f"lab-{self.port}.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)


def stop_local_services(data_dir: Path, instance_id: str | None = None) -> None:
    """Stop the services a lab left running: local services outlive their lab by design."""
    import asyncio

    from servicelab.config import INSTANCE_ID_FILE

    if instance_id is None:
        kept = data_dir / INSTANCE_ID_FILE
        instance_id = kept.read_text().strip() if kept.exists() else "servicelab"

    from servicelab.runtimes.local import LocalRuntime

    async def stop_all() -> None:
        runtime = LocalRuntime(data_dir / "services", instance_id)
        for instance in await runtime.adopt():
            await runtime.stop(instance.handle, timeout=5)
        await runtime.close()

    if (data_dir / "services").exists():
        # A thread of its own: the caller may already run an event loop (Playwright does).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, stop_all()).result()


def login(url: str, username: str, password: str) -> str:
    response = httpx.get(f"{url}/api/auth/login", auth=(username, password), timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["data"])


#: The proxy's data planes: the lab's own Python proxy, and nginx in front of the lab.
PLANES = ("embedded", "nginx")


def lab_env(plane: str, **extra: str) -> dict[str, str]:
    """The environment of a lab on the local runtime with the given proxy plane."""
    return {"SERVICELAB_RUNTIME": "local", "SERVICELAB_PROXY": plane, **extra}


def stop_nginx(data_dir: Path) -> None:
    """Stop the nginx plane a lab left running (it outlives its lab by design)."""
    pid_file = data_dir / "nginx" / "nginx.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, timeout=30, what="nginx stopped")


@contextlib.contextmanager
def plane_lab(tmp_path_factory: Any, plane: str, name: str, **env: str) -> Iterator[LabProcess]:
    """A lab on the local runtime behind the given proxy plane; stopped afterwards with
    everything it leaves running (its nginx, its services)."""
    data_dir = tmp_path_factory.mktemp(f"{name}-{plane}") / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env=lab_env(plane, **env)).start()
    try:
        yield lab
    finally:
        lab.stop()
        stop_nginx(data_dir)
        stop_local_services(data_dir)


def deploy(api: httpx.Client, project: str, name: str, code: str = ECHO) -> None:
    """Deploy a code service (the echo service by default) and wait until it runs."""
    r = api.post(
        f"/api/projects/{project}/services", params={"name": name}, json={"EXECUTE_CODE": code}
    )
    assert r.status_code == 201, r.text
    wait_until(
        lambda: (
            api.get(f"/api/projects/{project}/services/{name}").json()["data"]["status"]
            == "running"
        ),
        timeout=90,
        what=f"{project}/{name} running",
    )
