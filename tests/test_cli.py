"""The `servicelab` command against a real lab on 127.0.0.1 (local runtime).

Most commands run in-process through Typer's CliRunner (each with its own environment and
config file); `logs -f` and the error paths also run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from servicelab.cli import app

from .labtools import ADMIN_PASSWORD, ROOT, LabProcess, free_port, wait_until

SERVICELAB = [sys.executable, "-m", "servicelab"]


@dataclass
class Cli:
    """Runs `servicelab` commands with one config file and a clean LAB_* environment."""

    lab: LabProcess
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        values = {"SERVICELAB_CONFIG": str(self.config), "COLUMNS": "200"}
        values.update(self.env)
        values.update(extra)
        return values

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Any:
        result = CliRunner().invoke(app, list(args), input=input, env=self.environ(**env))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args: str, **kw: Any) -> Any:
        result = self(*args, **kw)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kw).stdout)

    def subprocess(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
        env.update(self.environ())
        return subprocess.run(
            [*SERVICELAB, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            **kw,
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("cli-lab") / "data"
    data_dir.mkdir()
    started = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LAB_ENDPOINT", "LAB_API_TOKEN", "LAB_PROJECT", "SERVICELAB_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT)


@pytest.fixture
def cli(lab: LabProcess, tmp_path: Path) -> Cli:
    """Logged in as admin, with a default project of its own."""
    runner = Cli(lab, tmp_path / "config" / "config.json")
    runner.ok("login", lab.url, "--username", "admin", input=ADMIN_PASSWORD + "\n")
    project = f"p{os.urandom(3).hex()}"
    runner.ok("projects", "create", project, "--use")
    return runner


def assert_one_line_error(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


# -- login ------------------------------------------------------------------------------


def test_login_saves_a_private_config_and_logout_revokes_the_session(
    lab: LabProcess, tmp_path: Path
) -> None:
    cli = Cli(lab, tmp_path / "cfg" / "config.json")
    result = cli.ok("login", lab.url, "-u", "admin", input=ADMIN_PASSWORD + "\n")
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    saved = json.loads(cli.config.read_text())
    token = saved["token"]
    assert token not in result.stdout + result.stderr
    me = cli.json("whoami")
    assert (me["user"], me["endpoint"], me["tokenKind"]) == ("admin", lab.url, "session")

    cli.ok("logout")
    assert "token" not in json.loads(cli.config.read_text())
    r = httpx.get(f"{lab.url}/api/auth/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert_one_line_error(cli("whoami"), 3, "servicelab login")


def test_login_with_a_token_and_with_a_wrong_one(lab: LabProcess, tmp_path: Path) -> None:
    cli = Cli(lab, tmp_path / "config.json")
    token = httpx.get(
        f"{lab.url}/api/auth/users/admin/token",
        headers={"Authorization": f"Bearer {lab.admin_token}"},
    ).json()["data"]
    cli.ok("login", lab.url, "--token", "-", input=token + "\n")
    assert cli.json("whoami")["tokenKind"] == "user"
    cli.ok("logout")  # forgets an API token without revoking it
    r = httpx.get(f"{lab.url}/api/auth/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200

    assert_one_line_error(cli("login", lab.url, "--token", "sls_wrong"), 3)
    wrong = cli.subprocess("services", "ls", "-p", "x")
    assert wrong.returncode == 3  # not logged in
    env_token = cli("services", "ls", "-p", "demo", LAB_ENDPOINT=lab.url, LAB_API_TOKEN="nope")
    assert_one_line_error(env_token, 3)
    assert "nope" not in env_token.stderr


def test_wrong_password_and_unreachable_lab(lab: LabProcess, tmp_path: Path) -> None:
    cli = Cli(lab, tmp_path / "config.json")
    assert_one_line_error(cli("login", lab.url, "-u", "admin", input="wrong\n"), 3, "password")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(cli("login", nowhere, "-u", "admin", input="x\n"), 6, "Cannot reach")
    assert_one_line_error(cli("login", "ftp://x", "-u", "a", input="x\n"), 2, "http://")


def test_debug_shows_the_traceback(lab: LabProcess, tmp_path: Path) -> None:
    cli = Cli(lab, tmp_path / "config.json")
    done = cli.subprocess("--debug", "login", lab.url, "--token", "sls_wrong")
    assert done.returncode == 3
    assert "Traceback" in done.stderr and "Error: " in done.stderr


# -- projects and tokens ----------------------------------------------------------------


def test_projects(cli: Cli) -> None:
    created = cli.json("projects", "create", "cli-projects", "-d", "for a test")
    assert created["name"] == "cli-projects" and created["description"] == "for a test"
    assert "cli-projects" in [p["name"] for p in cli.json("projects", "ls")]
    assert "cli-projects" in cli.ok("projects", "ls").stdout
    assert_one_line_error(cli("projects", "create", "cli-projects"), 1, "already exists")
    cli.ok("projects", "use", "cli-projects")
    assert cli.json("whoami")["project"] == "cli-projects"
    assert_one_line_error(cli("projects", "rm", "cli-projects"), 2, "--yes")
    cli.ok("projects", "rm", "cli-projects", "--yes")
    assert json.loads(cli.config.read_text()).get("project") is None
    assert_one_line_error(cli("projects", "use", "cli-projects"), 4, "not found")
    assert_one_line_error(cli("services", "ls"), 2, "--project")


def test_tokens(cli: Cli, lab: LabProcess) -> None:
    project = cli.json("whoami")["project"]
    user_token = cli.ok("tokens", "create", "--name", "ci", "-q").stdout.strip()
    assert cli.json("whoami", LAB_API_TOKEN=user_token)["tokenKind"] == "user"
    created = cli.json("tokens", "create", "--project", project, "--expires-in", "1h")
    assert created["kind"] == "project" and created["project"] == project
    assert created["expiresAt"]
    listed = cli.json("tokens", "ls", "--project", project)
    assert created["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    as_project = cli.json("services", "ls", LAB_API_TOKEN=created["token"])
    assert as_project == []
    cli.ok("tokens", "revoke", created["id"], "--project", project)

    def refused() -> bool:
        return cli("services", "ls", LAB_API_TOKEN=created["token"]).exit_code == 3

    wait_until(refused, timeout=15, what="revoked token refused")
    ids = {t["id"]: t for t in cli.json("tokens", "ls")}
    assert created["id"] not in ids
    assert_one_line_error(cli("tokens", "create", "--expires-in", "soon"), 2, "duration")
    assert_one_line_error(cli("tokens", "revoke", "nope"), 4)


# -- services ---------------------------------------------------------------------------


def test_service_lifecycle(cli: Cli, lab: LabProcess) -> None:
    project = cli.json("whoami")["project"]
    deployed = cli.json(
        "services",
        "deploy",
        "--code",
        "tests/services/echo-service",
        "--name",
        "echo",
        "-e",
        "GREETING=hi",
        "-e",
        "API_TOKEN=secret-value",
    )
    assert deployed["status"] == "running" and deployed["isHealthy"]
    assert deployed["code"] == str(ROOT / "tests" / "services" / "echo-service")
    assert deployed["configuration"]["GREETING"] == "hi"
    assert deployed["configuration"]["API_TOKEN"] == "********"

    listed = cli.json("services", "ls")
    assert [s["name"] for s in listed] == ["echo"]
    table = cli.ok("services", "ls").stdout
    assert "echo" in table and "running" in table
    assert cli.json("services", "show", "echo")["name"] == "echo"

    # `open` gives the service's own origin (for browsers); scripts use the path route.
    url = cli.ok("services", "open", "echo").stdout.strip()
    path = f"/api/projects/{project}/services/echo/8091/"
    assert url == f"http://echo--{project}.localhost:{lab.port}{path}"
    assert cli.json("services", "open", "echo")["url"] == url
    assert cli.json("services", "show", "echo")["endpoint"] == f"{lab.url}{path}"
    headers = {"Authorization": f"Bearer {lab.admin_token}"}
    r = httpx.get(f"{lab.url}{path}log", params={"n": 3, "text": "cli-line"}, headers=headers)
    assert r.status_code == 200
    wait_until(lambda: "cli-line 2" in cli.ok("services", "logs", "echo").stdout, what="logs")
    assert (
        cli.json("services", "logs", "echo", "--tail", "2")
        == cli.ok("services", "logs", "echo", "--tail", "2").stdout.splitlines()
    )

    assert cli.json("services", "stop", "echo")["status"] == "stopped"
    assert cli.json("services", "start", "echo", "--wait")["isHealthy"]
    restarted = cli.json("services", "restart", "echo", "--wait")
    assert restarted["status"] == "running"

    again = cli("services", "deploy", "--code", "tests/services/echo-service", "--name", "echo")
    assert_one_line_error(again, 1, "--update")
    updated = cli.json(
        "services",
        "deploy",
        "--code",
        "tests/services/echo-service",
        "--name",
        "echo",
        "--update",
        "-e",
        "GREETING=hello",
    )
    assert updated["configuration"]["GREETING"] == "hello"

    cli.ok("services", "rm", "echo", "--purge")
    assert_one_line_error(cli("services", "show", "echo"), 4, "not found")
    assert_one_line_error(cli("services", "logs", "echo"), 4)


def test_deploy_options_and_usage_errors(cli: Cli) -> None:
    assert_one_line_error(cli("services", "deploy"), 2, "--image")
    assert_one_line_error(cli("services", "deploy", "--code", "no/such/dir"), 2, "no such")
    assert_one_line_error(
        cli("services", "deploy", "--code", "tests/services/echo-service", "-e", "1X=y"), 2
    )
    assert_one_line_error(
        cli("services", "deploy", "--code", "tests/services/echo-service", "--port", "0"), 2
    )
    # Resources and the port reach the spec; --no-wait returns at once.
    started = cli.json(
        "services",
        "deploy",
        "--code",
        "tests/services/echo-service",
        "--name",
        "sized",
        "--port",
        "9123",
        "--cpus",
        "0.5",
        "--memory",
        "256m",
        "--no-wait",
    )
    assert started["resources"] == {"cpus": 0.5, "memory": 256 * 1024**2, "gpus": None}
    assert started["connectionPort"] == 9123
    assert started["configuration"]["PORT"] == "9123"
    bad_memory = cli(
        "services",
        "deploy",
        "--code",
        "tests/services/echo-service",
        "--name",
        "bad-memory",
        "--memory",
        "lots",
    )
    assert_one_line_error(bad_memory, 1, "memory")
    cli.ok("services", "rm", "sized", "--purge")


def test_a_failing_service_ends_deploy_with_exit_5_and_its_logs(cli: Cli) -> None:
    result = cli(
        "services", "deploy", "--code", "tests/services/missing-module", "--name", "broken"
    )
    assert result.exit_code == 5, (result.stdout, result.stderr)
    assert "ModuleNotFoundError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Service 'broken' failed")
    cli.ok("services", "rm", "broken", "--purge")


def test_logs_follow_ends_when_the_service_is_deleted(cli: Cli, lab: LabProcess) -> None:
    cli.ok("services", "deploy", "--code", "tests/services/echo-service", "--name", "followed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update(cli.environ())
    follower = subprocess.Popen(
        [*SERVICELAB, "services", "logs", "followed", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the executor's first line
        assert first, follower.stderr.read() if follower.stderr else ""
        cli.ok("services", "restart", "followed", "--wait")
        url = cli.json("services", "show", "followed")["endpoint"]
        headers = {"Authorization": f"Bearer {lab.admin_token}"}
        httpx.get(url + "log", params={"n": 1, "text": "after-restart"}, headers=headers)
        seen = []
        for line in follower.stdout:
            seen.append(line)
            if "after-restart 0" in line:
                break
        assert any("after-restart 0" in line for line in seen)
        cli.ok("services", "rm", "followed")
        assert follower.wait(timeout=60) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# -- data -------------------------------------------------------------------------------


def test_data_commands(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "table.csv"
    source.write_bytes(b"x,y\n" + b"1,2\n" * 10000)
    key = cli.ok("data", "upload", str(source)).stdout.strip()
    assert key == "datasets/table.csv.v1"
    assert cli.json("data", "upload", str(source))["key"] == "datasets/table.csv.v2"
    folder_key = cli.ok(
        "data", "upload", "tests/services/echo-service", "-t", "model", "--name", "echo.zip"
    ).stdout.strip()
    assert folder_key == "models/echo.zip.v1"

    listed = {f["key"]: f for f in cli.json("data", "ls")}
    assert set(listed) == {"datasets/table.csv.v2", "models/echo.zip.v1"}
    assert [f["key"] for f in cli.json("data", "ls", "--type", "models")] == [folder_key]
    assert "datasets/table.csv.v2" in cli.ok("data", "ls").stdout

    target = tmp_path / "out.csv"
    got = cli.json("data", "download", "datasets/table.csv", "-o", str(target))
    assert target.read_bytes() == source.read_bytes()
    assert got["sha256"] == listed["datasets/table.csv.v2"]["hash"]
    assert_one_line_error(
        cli("data", "download", "datasets/table.csv", "-o", str(target)), 2, "--force"
    )
    cli.ok("data", "download", key, "-o", str(tmp_path), "--force")
    assert (tmp_path / "table.csv").read_bytes() == source.read_bytes()

    assert cli.json("data", "rm", "datasets/table.csv")["deleted"] == [
        "datasets/table.csv.v1",
        "datasets/table.csv.v2",
    ]
    assert_one_line_error(cli("data", "download", "datasets/table.csv"), 4)
    assert_one_line_error(cli("data", "upload", str(tmp_path / "none")), 2)
    assert_one_line_error(cli("data", "ls", "--type", "photos"), 2, "datasets")


def test_deploy_code_from_a_data_key(cli: Cli) -> None:
    key = cli.ok("data", "upload", "tests/services/echo-service", "--name", "echo.zip").stdout
    service = cli.json("services", "deploy", "--code", key.strip(), "--name", "from-data")
    assert service["code"] == key.strip() and service["isHealthy"]
    cli.ok("services", "rm", "from-data", "--purge")


# -- the tools --------------------------------------------------------------------------


def test_execute_and_lint_pass_their_arguments_through(cli: Cli, tmp_path: Path) -> None:
    help_text = cli.subprocess("lint", "--help")
    assert help_text.returncode == 0 and "servicelab lint" in help_text.stdout
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    linted = cli.subprocess("lint", str(dockerfile))
    assert linted.returncode == 1  # no EXPOSE: a violated requirement
    assert cli.subprocess("lint", str(tmp_path / "none")).returncode == 2
    executed = cli.subprocess("execute", "--help")
    assert executed.returncode == 0 and "--requirements-only" in executed.stdout
    code = tmp_path / "job.py"
    code.write_text("print('ran the job')\n")
    ran = cli.subprocess("execute", str(code), "--code-only")
    assert ran.returncode == 0, ran.stderr
    assert "ran the job" in ran.stdout
