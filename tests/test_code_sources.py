"""Code services from a git URL and from a key in the project's data, through the proxy."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .gitserver import make_repo, serve_http
from .labtools import ROOT, LabProcess, wait_until
from .nethosts import far_host

ECHO_MAIN = (ROOT / "tests" / "services" / "echo-service" / "__main__.py").read_text()


def wait_running(api: httpx.Client, name: str) -> dict:
    return wait_until(
        lambda: (
            (s := api.get(f"/api/projects/demo/services/{name}").json()["data"])["status"]
            == "running"
            and s
        ),
        timeout=90,
        what=f"{name} running",
    )


@contextmanager
def git_host(root: Path) -> Iterator[str]:
    """A git server where the lab's services reach it: on a host of the tests' own (a
    sandboxed service's network reaches no port of this machine), else on loopback."""
    if os.geteuid() != 0:  # no sandbox without root
        with serve_http(root) as base:
            yield base
        return
    with far_host() as host, serve_http(root, host.listen()) as base:
        yield base


def test_code_from_a_git_url_over_http(lab_process: LabProcess, tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "git",
        [
            ("v1", {"svc/__main__.py": ECHO_MAIN, "svc/VERSION": "one"}),
            ("v2", {"svc/VERSION": "two"}),
        ],
        tags={"v1": "v1"},
    )
    with git_host(repo.bare.parent) as base, lab_process.client() as api:
        api.post("/api/projects", json={"name": "demo"})
        source = f"git+{base}/repo.git@v1#subdirectory=svc"
        r = api.post("/api/projects/demo/services", json={"EXECUTE_CODE": source})
        assert r.status_code == 201, r.text
        assert r.json()["data"]["name"] == "svc"  # named after the subdirectory
        wait_running(api, "svc")
        assert api.get("/api/projects/demo/services/svc/8091/").text == "ok"
        # An unknown ref fails the service, and its status says why.
        r = api.post(
            "/api/projects/demo/services",
            params={"name": "badref"},
            json={"EXECUTE_CODE": f"git+{base}/repo.git@no-such-ref#subdirectory=svc"},
        )
        assert r.status_code == 201
        failed = wait_until(
            lambda: (
                (s := api.get("/api/projects/demo/services/badref").json()["data"])["status"]
                == "failed"
                and s
            ),
            timeout=60,
            what="badref failed",
        )
        assert "no-such-ref" in failed["reason"]


def test_code_from_project_data(lab_process: LabProcess) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__main__.py", ECHO_MAIN)
    with lab_process.client() as api:
        api.post("/api/projects", json={"name": "demo"})
        r = api.post(
            "/api/projects/demo/files/upload",
            params={"dataType": "models", "fileName": "echo.zip"},
            files={"file": ("echo.zip", archive.getvalue(), "application/zip")},
        )
        assert r.status_code in (200, 201), r.text
        key = r.json()["data"]
        assert key.startswith("models/echo.zip")
        r = api.post(
            "/api/projects/demo/services",
            params={"name": "from-data"},
            json={"EXECUTE_CODE": "models/echo.zip"},
        )
        assert r.status_code == 201, r.text
        wait_running(api, "from-data")
        assert api.get("/api/projects/demo/services/from-data/8091/").text == "ok"
