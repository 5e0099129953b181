"""The EXECUTE_CODE runner, run as a real process against real repos, packages and servers."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from .gitserver import Repo, make_repo, serve_http

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTE_", "LAB_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def path_without(*tools: str) -> str:
    """PATH without the folders that hold `tools` (to test the fallbacks)."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any((Path(d) / t).exists() for t in tools)
    ]
    return os.pathsep.join(keep)


def execute(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicelab.execute", *args],
        env=env or base_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def app(text: str) -> str:
    """A __main__.py that prints `text` and where it runs."""
    return (
        "import os, sys\n"
        f"print({text!r})\n"
        "print('cwd', os.getcwd())\n"
        "print('port', os.environ.get('PORT'))\n"
        "print('prefix', sys.prefix)\n"
    )


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# --- local paths ------------------------------------------------------------------------


def test_folder_with_main(tmp_path: Path) -> None:
    code = write(tmp_path / "svc", {"__main__.py": app("hello folder")})
    result = execute(str(code))
    assert result.returncode == 0, result.stderr
    assert "hello folder" in result.stdout
    assert f"cwd {code}" in result.stdout
    assert "port 8091" in result.stdout
    assert "[execute] running" in result.stderr


def test_source_from_environment_and_port_override(tmp_path: Path) -> None:
    code = write(tmp_path / "svc", {"__main__.py": app("from env")})
    result = execute(env=base_env(EXECUTE_CODE=str(code), PORT="9000"))
    assert result.returncode == 0, result.stderr
    assert "from env" in result.stdout and "port 9000" in result.stdout


def test_single_python_file(tmp_path: Path) -> None:
    script = write(tmp_path / "svc", {"serve.py": app("a script")}) / "serve.py"
    result = execute(str(script))
    assert result.returncode == 0, result.stderr
    assert "a script" in result.stdout and f"cwd {script.parent}" in result.stdout


def test_folder_without_main_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = execute(str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "has no __main__.py" in result.stderr
    assert "Traceback" not in result.stderr


def test_nothing_to_run(tmp_path: Path) -> None:
    result = execute()
    assert result.returncode == 1 and "EXECUTE_CODE" in result.stderr
    result = execute(str(tmp_path / "missing"))
    assert result.returncode == 1 and "Cannot find code" in result.stderr
    result = execute("--requirements-only", "--code-only", str(tmp_path))
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_unknown_flags_are_ignored_like_ml_lab(tmp_path: Path) -> None:
    code = write(tmp_path / "svc", {"__main__.py": app("tolerant")})
    result = execute("--some-ml-lab-flag", str(code))
    assert result.returncode == 0, result.stderr
    assert "ignoring unknown arguments: --some-ml-lab-flag" in result.stderr


def test_exit_codes(tmp_path: Path) -> None:
    code = write(tmp_path / "svc", {"__main__.py": "raise SystemExit(7)\n"})
    assert execute(str(code)).returncode == 7
    write(code, {"__main__.py": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"})
    assert execute(str(code)).returncode == 128 + signal.SIGTERM


# --- signals ----------------------------------------------------------------------------


def wait_for(path: Path, proc: subprocess.Popen[str], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded(tmp_path: Path, sig: signal.Signals) -> None:
    ready, got = tmp_path / "ready", tmp_path / "got"
    code = write(
        tmp_path / "svc",
        {
            "__main__.py": (
                "import signal, sys, time, pathlib\n"
                "def on_signal(signum, frame):\n"
                f"    pathlib.Path({str(got)!r}).write_text(str(signum))\n"
                "    sys.exit(3)\n"
                "signal.signal(signal.SIGTERM, on_signal)\n"
                "signal.signal(signal.SIGINT, on_signal)\n"
                f"pathlib.Path({str(ready)!r}).write_text('ok')\n"
                "while True:\n"
                "    time.sleep(0.1)\n"
            )
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "servicelab.execute", str(code)],
        env=base_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(ready, proc)
        proc.send_signal(sig)
        proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert got.read_text() == str(int(sig))
    assert proc.returncode == 3


# --- git --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("git")
    return make_repo(
        root,
        [
            ("first", {"__main__.py": app("version one"), "sub/app/__main__.py": app("sub one")}),
            ("second", {"__main__.py": app("version two")}),
        ],
        branches={"feature": [("third", {"__main__.py": app("on feature")})]},
        tags={"v1": "first"},
    )


@pytest.fixture(scope="module")
def http_base(repo: Repo) -> Iterator[str]:
    with serve_http(repo.bare.parent) as base:
        yield base


@pytest.fixture(params=["file", "http"])
def repo_url(request: pytest.FixtureRequest, repo: Repo) -> str:
    if request.param == "file":
        return repo.file_url
    return f"{request.getfixturevalue('http_base')}/repo.git"


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("", "version two"),
        ("@main", "version two"),
        ("@feature", "on feature"),
        ("@v1", "version one"),
        ("@{first}", "version one"),
        ("@{first_short}", "version one"),
        ("#subdirectory=sub/app", "sub one"),
        ("@v1#egg=x&subdirectory=sub/app", "sub one"),
    ],
)
def test_git_refs(repo: Repo, repo_url: str, tmp_path: Path, suffix: str, expected: str) -> None:
    suffix = suffix.format(first=repo.commits["first"], first_short=repo.commits["first"][:8])
    result = execute(f"git+{repo_url}{suffix}", "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert f"cwd {tmp_path / 'work' / 'code'}" in result.stdout


def test_git_default_workdir_is_removed(repo: Repo, tmp_path: Path) -> None:
    env = base_env(TMPDIR=str(tmp_path))
    result = execute(f"git+{repo.file_url}", env=env)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_git_unknown_ref(repo_url: str, tmp_path: Path) -> None:
    result = execute(f"git+{repo_url}@nope", "--workdir", str(tmp_path))
    assert result.returncode == 1
    assert "Unknown ref 'nope'" in result.stderr
    assert "feature" in result.stderr and "v1" in result.stderr  # what exists instead
    result = execute(f"git+{repo_url}@deadbeef", "--workdir", str(tmp_path))
    assert result.returncode == 1 and "Unknown ref 'deadbeef'" in result.stderr


def test_git_missing_subdirectory(repo: Repo, tmp_path: Path) -> None:
    result = execute(f"git+{repo.file_url}#subdirectory=nope", "--workdir", str(tmp_path))
    assert result.returncode == 1 and "no subdirectory 'nope'" in result.stderr
    result = execute(f"git+{repo.file_url}#subdirectory=../x", "--workdir", str(tmp_path))
    assert result.returncode == 1 and "inside the repository" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_git_unreachable(tmp_path: Path) -> None:
    url = f"git+http://user:hunter2@127.0.0.1:{free_port()}/repo.git"
    result = execute(url, "--workdir", str(tmp_path))
    assert result.returncode == 1
    assert "Reaching git repository http://***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr
    result = execute(f"git+{(tmp_path / 'none.git').as_uri()}", "--workdir", str(tmp_path))
    assert result.returncode == 1 and "Reaching git repository" in result.stderr


def test_vcs_tool_missing(tmp_path: Path) -> None:
    env = base_env(PATH=str(tmp_path))
    result = execute("hg+https://127.0.0.1/repo", env=env)
    assert result.returncode == 1 and "Mercurial ('hg')" in result.stderr
    result = execute("svn+https://127.0.0.1/repo", env=env)
    assert result.returncode == 1 and "Subversion ('svn')" in result.stderr
    result = execute("bzr+https://127.0.0.1/repo", env=env)
    assert result.returncode == 1 and "Bazaar" in result.stderr


@pytest.mark.skipif(not shutil.which("hg"), reason="needs Mercurial")
def test_mercurial(tmp_path: Path) -> None:
    hg_repo = write(tmp_path / "hgrepo", {"__main__.py": app("from hg")})
    hg = ["hg", "--config", "ui.username=Test <t@example.invalid>"]
    subprocess.run([*hg, "init"], cwd=hg_repo, check=True)
    subprocess.run([*hg, "commit", "-q", "-A", "-m", "one"], cwd=hg_repo, check=True)
    subprocess.run([*hg, "tag", "-q", "v1"], cwd=hg_repo, check=True)
    result = execute(f"hg+{hg_repo.as_uri()}@v1", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    assert "from hg" in result.stdout
    result = execute(f"hg+{hg_repo.as_uri()}@nope", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 1 and "hg checkout" in result.stderr


@pytest.mark.skipif(not shutil.which("svnadmin"), reason="needs Subversion")
def test_subversion(tmp_path: Path) -> None:
    svn_repo = tmp_path / "svnrepo"
    subprocess.run(["svnadmin", "create", str(svn_repo)], check=True)
    source = write(tmp_path / "import", {"trunk/__main__.py": app("from svn")})
    subprocess.run(["svn", "import", "-q", "-m", "one", str(source), svn_repo.as_uri()], check=True)
    result = execute(f"svn+{svn_repo.as_uri()}/trunk@1", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    assert "from svn" in result.stdout


# --- dependencies -----------------------------------------------------------------------


def make_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0") -> Path:
    """A pure-Python wheel, built by hand so that installs need no network."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def dependency_project(tmp_path: Path) -> tuple[Path, Path]:
    """Code whose setup.sh fails unless it runs before requirements.txt, and whose main
    needs what requirements.txt installs. Returns (code folder, order log)."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    log = tmp_path / "order.log"
    code = write(
        tmp_path / "svc",
        {
            "requirements.txt": f"--no-index\n--find-links {wheels}\ntinypkg\n",
            "setup.sh": (
                f"echo setup.sh >> {log}\n"
                "if python -c 'import tinypkg' 2>/dev/null; then\n"
                "  echo 'requirements.txt ran before setup.sh' >&2; exit 9\n"
                "fi\n"
                "python -c 'import sys; print(\"setup python\", sys.prefix)'\n"
            ),
            "__main__.py": (
                "import sys, tinypkg\n"
                "print('tinypkg', tinypkg.VERSION)\n"
                "print('prefix', sys.prefix)\n"
            ),
        },
    )
    return code, log


@pytest.mark.slow
def test_dependencies_with_uv_in_a_venv(tmp_path: Path) -> None:
    assert shutil.which("uv"), "this test needs uv on PATH"
    code, log = dependency_project(tmp_path)
    venv = tmp_path / "venv"
    result = execute(str(code), "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "setup.sh\n"
    assert "tinypkg 1.0" in result.stdout and f"prefix {venv}" in result.stdout
    assert f"setup python {venv}" in result.stderr  # setup.sh's `python` is the venv's
    assert "[execute] installing requirements.txt with uv" in result.stderr
    # Again with the venv in place: --code-only reuses it and installs nothing.
    result = execute("--code-only", str(code), env=base_env(EXECUTE_VENV=str(venv)))
    assert result.returncode == 0, result.stderr
    assert "tinypkg 1.0" in result.stdout and log.read_text() == "setup.sh\n"


@pytest.mark.slow
def test_dependencies_with_pip_when_uv_is_missing(tmp_path: Path) -> None:
    code, log = dependency_project(tmp_path)
    venv = tmp_path / "venv"
    env = base_env(PATH=path_without("uv"))
    result = execute(str(code), "--venv", str(venv), env=env)
    assert result.returncode == 0, result.stderr
    assert "[execute] installing requirements.txt with pip" in result.stderr
    assert "tinypkg 1.0" in result.stdout and f"prefix {venv}" in result.stdout


@pytest.mark.slow
def test_requirements_only_then_code_only(tmp_path: Path) -> None:
    code, log = dependency_project(tmp_path)
    venv = tmp_path / "venv"
    result = execute("--requirements-only", str(code), "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    assert "tinypkg" not in result.stdout  # the code did not run
    assert log.read_text() == "setup.sh\n"
    result = execute("--code-only", str(code), "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    assert "tinypkg 1.0" in result.stdout
    assert log.read_text() == "setup.sh\n"  # nothing installed the second time


def test_a_venv_is_made_only_when_there_is_something_to_install(tmp_path: Path) -> None:
    """Code without requirements.txt or setup.sh runs with the running Python: in a
    hardened container that environment is read-only, where a venv would be writable."""
    code = write(tmp_path / "svc", {"__main__.py": "import sys\nprint('prefix', sys.prefix)\n"})
    venv = tmp_path / "venv"
    for mode in ("--requirements-only", "--code-only"):  # the local sandbox's two runs
        result = execute(mode, str(code), "--venv", str(venv))
        assert result.returncode == 0, result.stderr
    assert not venv.exists()
    assert f"prefix {sys.prefix}" in result.stdout


def test_code_only_skips_installs(tmp_path: Path) -> None:
    marker = tmp_path / "setup-ran"
    code = write(
        tmp_path / "svc",
        {
            "setup.sh": f"touch {marker}\n",
            "requirements.txt": "--no-index\nsurely-not-a-package\n",
            "__main__.py": app("ran without installs"),
        },
    )
    result = execute("--code-only", str(code))
    assert result.returncode == 0, result.stderr
    assert "ran without installs" in result.stdout and not marker.exists()


def test_failing_requirements_stop_the_run(tmp_path: Path) -> None:
    code = write(
        tmp_path / "svc",
        {
            "requirements.txt": "--no-index\nsurely-not-a-package-xyz\n",
            "__main__.py": app("must not run"),
        },
    )
    result = execute(str(code), "--venv", str(tmp_path / "venv"))
    assert result.returncode == 1
    assert "requirements.txt failed with exit code" in result.stderr
    assert "surely-not-a-package-xyz" in result.stderr  # the installer's own output
    assert "must not run" not in result.stdout


def test_failing_setup_stops_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "after-false"
    code = write(
        tmp_path / "svc",
        {
            "setup.sh": f"echo about to fail\nfalse\ntouch {marker}\n",
            "requirements.txt": "--no-index\nsurely-not-a-package\n",
            "__main__.py": app("must not run"),
        },
    )
    result = execute(str(code))
    assert result.returncode == 1
    assert "setup.sh failed with exit code 1" in result.stderr
    assert "about to fail" in result.stderr
    assert not marker.exists()  # set -e
    assert "installing requirements.txt" not in result.stderr
    assert "must not run" not in result.stdout


def test_environment_yml_needs_a_conda_tool(tmp_path: Path) -> None:
    code = write(tmp_path / "svc", {"environment.yml": "name: x\n", "__main__.py": app("no")})
    env = base_env(PATH=path_without("conda", "mamba", "micromamba"))
    result = execute(str(code), "--venv", str(tmp_path / "venv"), env=env)
    assert result.returncode == 1
    assert "needs conda, mamba or micromamba" in result.stderr


@pytest.mark.slow
def test_environment_yml_comes_first(tmp_path: Path) -> None:
    """conda cannot build environments offline, so a stand-in `micromamba` records its
    call and makes the prefix a plain venv; the order and the wiring are what is tested."""
    code, log = dependency_project(tmp_path)
    write(code, {"environment.yml": "name: svc\ndependencies: [python]\n"})
    tools = tmp_path / "tools"
    write(
        tools,
        {
            "micromamba": (
                "#!/bin/sh\n"
                f'echo "environment.yml $*" >> {log}\n'
                'while [ $# -gt 0 ]; do [ "$1" = -p ] && prefix=$2; shift; done\n'
                f'{sys.executable} -m venv --without-pip "$prefix"\n'
                'mkdir -p "$prefix/conda-meta"\n'
            )
        },
    )
    (tools / "micromamba").chmod(0o755)
    prefix = tmp_path / "env"
    env = base_env(PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")
    result = execute(str(code), "--venv", str(prefix), env=env)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith(f"environment.yml create -y -p {prefix} -f ")
    assert lines[1:] == ["setup.sh"]
    assert f"prefix {prefix}" in result.stdout and "tinypkg 1.0" in result.stdout


# --- data keys --------------------------------------------------------------------------

TOKEN = "secret-token-123"
Served = tuple[str, dict[str, bytes]]


class _DataHandler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        key = parse_qs(url.query).get("fileKey", [""])[0]
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, b'{"data": null, "errors": {"message": "Invalid token."}}')
        elif url.path != "/api/projects/demo/files/download" or key not in self.files:
            self._send(404, b'{"data": null, "errors": {"message": "No such file."}}')
        else:
            self._send(200, self.files[key], "application/octet-stream")

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def data_server() -> Iterator[Served]:
    """A stand-in for the lab's download route: (endpoint, key -> bytes it serves)."""
    files: dict[str, bytes] = {}
    handler = type("Handler", (_DataHandler,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def lab_env(endpoint: str, token: str = TOKEN) -> dict[str, str]:
    return base_env(LAB_ENDPOINT=endpoint, LAB_PROJECT="demo", LAB_API_TOKEN=token)


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, text: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), text.encode()


def link_member(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def test_data_key_python_file(data_server: Served, tmp_path: Path) -> None:
    endpoint, files = data_server
    files["models/serve.py.v2"] = app("from a data script").encode()
    result = execute("models/serve.py.v2", "--workdir", str(tmp_path), env=lab_env(endpoint))
    assert result.returncode == 0, result.stderr
    assert "from a data script" in result.stdout
    assert TOKEN not in result.stderr + result.stdout


def test_data_key_zip_of_a_folder(data_server: Served, tmp_path: Path) -> None:
    endpoint, files = data_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("svc/__main__.py", app("from a zip"))
        zf.writestr("svc/helper.txt", "x")
    files["models/svc.zip"] = buffer.getvalue()
    result = execute(
        env={
            **lab_env(endpoint),
            "EXECUTE_CODE": "models/svc.zip",
            "EXECUTE_WORKDIR": str(tmp_path),
        }
    )
    assert result.returncode == 0, result.stderr
    assert "from a zip" in result.stdout and f"cwd {tmp_path / 'code' / 'svc'}" in result.stdout


def test_data_key_tarball(data_server: Served, tmp_path: Path) -> None:
    endpoint, files = data_server
    files["experiments/svc.tar.gz"] = tarball(
        [
            file_member("__main__.py", app("from a tarball")),
            link_member("same.py", "__main__.py"),
        ]
    )
    result = execute("experiments/svc.tar.gz", "--workdir", str(tmp_path), env=lab_env(endpoint))
    assert result.returncode == 0, result.stderr
    assert "from a tarball" in result.stdout


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([file_member("../evil.py", "x")], "outside the code folder"),
        ([file_member("/tmp/evil.py", "x")], "outside the code folder"),
        ([link_member("out", "../../..")], "points outside"),
        ([link_member("out", "/etc")], "points outside"),
        ([link_member("here", "."), file_member("here/x.py", "x")], "through a symbolic link"),
        ([(tarfile.TarInfo("dev"), None)], None),  # replaced below by a device
    ],
)
def test_unsafe_tarballs_are_refused(
    data_server: Served, tmp_path: Path, members: list, why: str | None
) -> None:
    endpoint, files = data_server
    if why is None:
        members[0][0].type, why = tarfile.CHRTYPE, "devices"
    files["models/bad.tar.gz"] = tarball([file_member("__main__.py", app("no")), *members])
    work = tmp_path / "a" / "b" / "work"
    result = execute("models/bad.tar.gz", "--workdir", str(work), env=lab_env(endpoint))
    assert result.returncode == 1
    assert "Refusing archive member" in result.stderr and why in result.stderr
    assert "no" not in result.stdout
    assert not (work / "code" / "__main__.py").exists()  # refused before anything lands
    assert not (work.parent / "evil.py").exists()


def test_zip_with_traversal_is_refused(data_server: Served, tmp_path: Path) -> None:
    endpoint, files = data_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("__main__.py", app("no"))
        zf.writestr("../evil.py", "x")
    files["models/bad.zip"] = buffer.getvalue()
    result = execute("models/bad.zip", "--workdir", str(tmp_path / "w"), env=lab_env(endpoint))
    assert result.returncode == 1 and "Refusing archive member '../evil.py'" in result.stderr


def test_data_key_errors(data_server: Served, tmp_path: Path) -> None:
    endpoint, files = data_server
    files["models/svc.py"] = app("x").encode()
    result = execute("models/svc.py", env=lab_env(endpoint, token="wrong-token"))
    assert result.returncode == 1
    assert "HTTP 401 (is LAB_API_TOKEN valid?): Invalid token." in result.stderr
    assert "wrong-token" not in result.stderr
    result = execute("models/missing.py", env=lab_env(endpoint))
    assert result.returncode == 1 and "HTTP 404" in result.stderr
    result = execute("models/svc.py", env=base_env())
    assert result.returncode == 1 and "LAB_ENDPOINT, LAB_PROJECT, LAB_API_TOKEN" in result.stderr
    files["models/notes.txt"] = b"just text"
    result = execute("models/notes.txt", env=lab_env(endpoint))
    assert result.returncode == 1 and "use a .py file, a .zip or a .tar.gz" in result.stderr
    result = execute("models/svc.py", env=lab_env(f"http://127.0.0.1:{free_port()}"))
    assert result.returncode == 1 and "failed" in result.stderr
    assert "Traceback" not in result.stderr


def _spaces(out: io.BufferedIOBase | object, total: int) -> None:
    chunk = b" " * (1024 * 1024)
    for _ in range(total // len(chunk)):
        out.write(chunk)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """A zip and a tar.gz of a __main__.py and 1 GiB of spaces (each about 1 MiB)."""
    made: dict[str, bytes] = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("__main__.py", app("boom"))
        with zf.open("spaces.txt", "w", force_zip64=True) as member:
            _spaces(member, 1024**3)
    made["zip"] = buffer.getvalue()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tf:
        main = app("boom").encode()
        info = tarfile.TarInfo("__main__.py")
        info.size = len(main)
        tf.addfile(info, io.BytesIO(main))
        info = tarfile.TarInfo("spaces.txt")
        info.size = 1024**3
        reader, writer = os.pipe()

        def feed() -> None:
            with os.fdopen(writer, "wb") as sink:
                _spaces(sink, 1024**3)

        feeder = threading.Thread(target=feed)
        feeder.start()
        with os.fdopen(reader, "rb") as source:
            tf.addfile(info, source)
        feeder.join()
    made["tar.gz"] = buffer.getvalue()
    return made


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_zip_bomb_is_refused_before_anything_is_unpacked(
    data_server: Served, bombs: dict[str, bytes], tmp_path: Path, kind: str
) -> None:
    """Issue 26: the executor checks an archive against the lab's bounds before it unpacks
    it, whatever reached it (a data key, a local archive), not only at upload."""
    endpoint, files = data_server
    files[f"models/bomb.{kind}"] = bombs[kind]
    work = tmp_path / "w"
    result = execute(f"models/bomb.{kind}", "--workdir", str(work), env=lab_env(endpoint))
    assert result.returncode == 1, result.stderr
    refusals = [line for line in result.stderr.splitlines() if "unpacks to" in line]
    assert len(refusals) == 1, result.stderr
    assert f"Cannot unpack models/bomb.{kind}" in refusals[0]
    assert "1 GiB or more" in refusals[0] and "100 times their own size" in refusals[0]
    assert "Traceback" not in result.stderr
    assert not (work / "code").exists() or not any((work / "code").iterdir())
