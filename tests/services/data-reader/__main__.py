"""A test service that reads the project's data with `lab_client`, configured only by the
LAB_* variables the lab gives every service: `Environment()` without arguments.

GET /read?key=datasets/a.csv answers the file's content (downloaded once into
$LAB_ROOT_FOLDER, or ./environment); GET / answers "ok" for the health check.
`lab_client` comes from $PYTHONPATH (the repository) or, sandboxed, from a copy beside
this file that the test makes; its one dependency, httpx, from requirements.txt.
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Downloads go to the service's own data folder: its code folder is read-only.
os.environ.setdefault(
    "LAB_ROOT_FOLDER", os.path.join(os.environ.get("LAB_DATA_DIR", "."), "environment")
)

from lab_client import Environment, LabApiError  # noqa: E402

PORT = int(os.environ.get("PORT", "8091"))
IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
HOST = "0.0.0.0" if IN_CONTAINER else "127.0.0.1"


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            return self._send(200, "ok")
        if url.path != "/read":
            return self._send(404, "not found")
        key = parse_qs(url.query).get("key", [""])[0]
        try:
            path = Environment().get_file(key)
        except LabApiError as exc:
            return self._send(502, f"{exc.status} {exc.code}: {exc.message}")
        self._send(200, Path(path).read_text())


if __name__ == "__main__":
    print(f"data-reader listening on {PORT}", flush=True)
    ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
