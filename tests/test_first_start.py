"""`servicelab serve` on a fresh data folder: the printed log-in steps work, with curl."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from .labtools import ROOT, free_port, wait_until


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SERVICELAB_ADMIN_PASSWORD"}
    env.update(
        SERVICELAB_DATA_DIR=str(data_dir), SERVICELAB_PORT=str(port), SERVICELAB_RUNTIME="local"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "servicelab", "serve"],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
        timeout=60,
        what="lab started",
    )
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_printed_login_steps_list_projects_with_curl(tmp_path: Path) -> None:
    port = free_port()
    first_log = tmp_path / "first.log"
    process = start(tmp_path / "data", port, first_log)
    try:
        output = first_log.read_text()
        password = re.search(r"created with the password (\S+)", output)
        assert password, output
        # The printed command, as a new user would copy it, with the password filled in.
        login_line = re.search(r"curl -su admin:\S+ (\S+/api/auth/login)", output)
        assert login_line, output
        result = subprocess.run(
            ["curl", "-su", f"admin:{password.group(1)}", login_line.group(1)],
            capture_output=True,
            text=True,
            check=True,
        )
        token = json.loads(result.stdout)["data"]
        list_line = re.search(
            r"curl -sH 'Authorization: Bearer <token>' (\S+/api/projects)", output
        )
        assert list_line, output
        result = subprocess.run(
            ["curl", "-sH", f"Authorization: Bearer {token}", list_line.group(1)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(result.stdout)["data"] == []
    finally:
        stop(process)

    # The password is shown once: a second start does not print it, and it is in no log.
    second_log = tmp_path / "second.log"
    process = start(tmp_path / "data", port, second_log)
    stop(process)
    assert password.group(1) not in second_log.read_text()
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".txt", ".json"):
            assert password.group(1) not in path.read_text(errors="replace")


def test_bad_settings_are_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "servicelab", "serve", "--runtime", "bogus"],
        cwd=ROOT,
        env={**os.environ, "SERVICELAB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "runtime: SERVICELAB_RUNTIME='bogus': no installed package" in result.stderr
    assert "(known: docker, kubernetes, local, memory)" in result.stderr
    assert "Traceback" not in result.stderr
