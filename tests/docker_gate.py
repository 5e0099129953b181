"""A gate on the way to the Docker engine: a Unix socket that passes every byte to the
real engine's socket, and can hold one container creation until the test lets it go.

Labs given `DOCKER_HOST=unix://<gate.path>` talk to the real engine through it, so every
container is really created; the test only decides *when* a creation reaches the engine,
which makes "a lab in the middle of starting a container" a moment the test can hold and
act in (freeze the lab, let another take over), instead of a race.

`arm()` makes the gate hold the next `POST .../containers/create` request: `held` is set
when it arrives, `release()` sends it on, and `created_id` is the id the engine answers
with (set once its answer went back to the lab).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import socketserver
import threading
from pathlib import Path

CREATE = re.compile(rb"^POST /(?:v[\d.]+/)?containers/create\b")
CREATED_ID = re.compile(rb'"Id"\s*:\s*"([0-9a-f]{64})"')


def engine_socket() -> str:
    """The path of the engine's Unix socket, from DOCKER_HOST as the SDK reads it."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise AssertionError(f"the Docker gate needs the engine on a Unix socket, not {host}")
    return host.removeprefix("unix://")


class DockerGate:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = engine_socket()
        self.held = threading.Event()
        self.created = threading.Event()
        self.created_id = ""
        self._armed = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def arm(self) -> None:
        with self._lock:
            self._armed = True
            self.held.clear()
            self.created.clear()
            self._released.clear()
            self.created_id = ""

    def release(self) -> None:
        self._released.set()

    def _hold_this(self, chunk: bytes) -> bool:
        """Whether `chunk` starts the creation to hold (only the first after `arm`)."""
        with self._lock:
            if self._armed and CREATE.match(chunk):
                self._armed = False
                return True
            return False

    # -- the server ---------------------------------------------------------------------

    def start(self) -> DockerGate:
        gate = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                gate._connection(self.request)

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _connection(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        engine.connect(self.engine)
        # A creation was held on this connection: its answer carries the new id.
        watching = threading.Event()
        answers = threading.Thread(
            target=self._answers, args=(engine, client, watching), daemon=True
        )
        answers.start()
        try:
            while chunk := client.recv(65536):
                if self._hold_this(chunk):
                    self.held.set()
                    self._released.wait()
                    watching.set()
                engine.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                engine.shutdown(socket.SHUT_WR)
            answers.join(timeout=5)
            engine.close()

    def _answers(
        self, engine: socket.socket, client: socket.socket, watching: threading.Event
    ) -> None:
        seen = b""
        try:
            while chunk := engine.recv(65536):
                client.sendall(chunk)
                if watching.is_set() and not self.created.is_set():
                    seen += chunk
                    found = CREATED_ID.search(seen)
                    if found:
                        self.created_id = found.group(1).decode()
                        self.created.set()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
