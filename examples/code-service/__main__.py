"""A code service: ML Lab's EXECUTE_CODE kind, standard library only.

Run it with servicelab's executor (`python -m servicelab.execute examples/code-service`),
in the runtime image (EXECUTE_CODE=/workspace/code-service), or as it is:
`python examples/code-service`. It serves HTTP on $PORT (default 8091, ML Lab's port).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GREETING = os.environ.get("GREETING", "Hello from a code service")
# servicelab tells every service where its persistent folder is; /data in containers.
DATA_DIR = Path(os.environ.get("LAB_DATA_DIR") or "/data")
# Inside a container, listen on all of its addresses (only published ports reach it);
# as a local process, on loopback only, so that nothing bypasses the lab's proxy.
IN_CONTAINER = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
HOST = "0.0.0.0" if IN_CONTAINER else "127.0.0.1"
LAB_VARIABLES = ("LAB_ENDPOINT", "LAB_API_TOKEN", "LAB_PROJECT", "LAB_SERVICE_PATH")

_visits_lock = threading.Lock()


def count_visit() -> int | None:
    """Add one to the counter in the data folder (atomic write); None if it is not writable."""
    path = DATA_DIR / "visits.json"
    with _visits_lock:
        try:
            count = json.loads(path.read_text())["visits"] + 1 if path.exists() else 1
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=DATA_DIR, prefix=".visits.")
            with os.fdopen(fd, "w") as handle:
                json.dump({"visits": count}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            return None
    return int(count)


class Handler(BaseHTTPRequestHandler):
    server_version = "servicelab-code-service/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = {
                "greeting": GREETING,
                "service": "servicelab-example-code-service",
                "lab_variables": [name for name in LAB_VARIABLES if os.environ.get(name)],
                "LAB_PROJECT": os.environ.get("LAB_PROJECT"),
            }
        elif path == "/health":
            body = {"status": "ok"}
        elif path == "/visits":
            body = {"visits": count_visit()}
        else:
            self.send_json(404, {"detail": "Not Found"})
            return
        self.send_json(200, body)

    def send_json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # To stdout, not http.server's stderr: the guide's logging convention.
        sys.stdout.write(f"{self.address_string()} - {format % args}\n")
        sys.stdout.flush()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # leave serve_forever() and close the socket: exit 0


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)  # `docker stop` and servicelab's stop send it
    port = int(os.environ.get("PORT") or 8091)
    server = ThreadingHTTPServer((HOST, port), Handler)
    print(f"code service listening on port {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
