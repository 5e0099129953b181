"""Real git repositories for tests, served over file:// and over HTTP on 127.0.0.1.

HTTP goes through `git http-backend` (git's own smart-HTTP CGI program) behind a small
threaded Python server, so clones exercise the same protocol as a real git host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT = shutil.which("git") or "git"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [GIT, *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@dataclass
class Repo:
    """A bare repository and the commits the tests refer to."""

    bare: Path
    commits: dict[str, str] = field(default_factory=dict)

    @property
    def file_url(self) -> str:
        return self.bare.as_uri()


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_repo(
    root: Path,
    history: list[tuple[str, dict[str, str]]],
    branches: dict[str, list[tuple[str, dict[str, str]]]] | None = None,
    tags: dict[str, str] | None = None,
) -> Repo:
    """Build `<root>/work` from `history` (commit label -> files), branch off `main` with
    `branches`, tag commits by label with `tags`, and push all to `<root>/repo.git`.

    `Repo.commits` maps each label to its commit id.
    """
    work = root / "work"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    repo = Repo(root / "repo.git")
    for label, files in history:
        write_files(work, files)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", label, cwd=work)
        repo.commits[label] = git("rev-parse", "HEAD", cwd=work)
    for branch, commits in (branches or {}).items():
        git("checkout", "-q", "-b", branch, "main", cwd=work)
        for label, files in commits:
            write_files(work, files)
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", label, cwd=work)
            repo.commits[label] = git("rev-parse", "HEAD", cwd=work)
        git("checkout", "-q", "main", cwd=work)
    for tag, label in (tags or {}).items():
        git("tag", tag, repo.commits[label], cwd=work)
    # A bare clone keeps every branch as a branch, and the tags.
    git("clone", "-q", "--bare", str(work), str(repo.bare), cwd=root)
    return repo


class _GitHandler(BaseHTTPRequestHandler):
    """Hands each request to `git http-backend` as a CGI program would."""

    server: _GitServer

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._read_body()
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        result = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


class _GitServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, listening: socket.socket | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _GitHandler, bind_and_activate=listening is None)
        if listening is not None:
            self.socket.close()
            self.socket = listening
            self.server_address = listening.getsockname()
        self.root = root


@contextmanager
def serve_http(root: Path, listening: socket.socket | None = None) -> Iterator[str]:
    """Serve the bare repositories under `root`; yields the base URL (`http://127.0.0.1:N`,
    or the address of `listening`, a socket of a test host: see nethosts).

    A repository at `<root>/repo.git` is then at `<base URL>/repo.git`.
    """
    server = _GitServer(root, listening)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
