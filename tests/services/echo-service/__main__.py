"""A tiny test service on the standard library only: reusable by every runtime's tests.

Routes: `/` (200 "ok"), `/env` (its environment as JSON), `/headers` (the request's path
and headers as JSON), `/links` (a page with relative links), `/data` (GET reads, POST/PUT
writes `$LAB_DATA_DIR/value.txt`), `/crash` (exits with code 3), `/log?n=N&text=T`
(prints N log lines), `/dated` (a `Date` of 2001), `/undated` (no `Date`). Listens on
$PORT (default 8091): on 127.0.0.1 as a local process, on all addresses inside a
container. Prints one log line per request; exits 0 on SIGTERM (unless IGNORE_SIGTERM=1).
"""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PORT = int(os.environ.get("PORT", "8091"))
DATA_DIR = Path(os.environ.get("LAB_DATA_DIR", "/data"))
IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
HOST = os.environ.get("SERVICE_HOST", "0.0.0.0" if IN_CONTAINER else "127.0.0.1")


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(200, "ok")
        elif url.path == "/headers":
            # Every header as received, repeated ones included, plus the raw request line.
            seen = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
            self._send(200, json.dumps(seen), "application/json")
        elif url.path in ("/dated", "/undated"):
            self.send_response_only(200)
            if url.path == "/dated":
                self.send_header("Date", "Mon, 01 Jan 2001 00:00:00 GMT")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif url.path == "/links":
            self._send(200, '<a href="env">env</a> <a href="./data">data</a>', "text/html")
        elif url.path == "/env":
            self._send(200, json.dumps(dict(os.environ)), "application/json")
        elif url.path == "/data":
            path = DATA_DIR / "value.txt"
            if path.exists():
                self._send(200, path.read_text())
            else:
                self._send(404, "no value")
        elif url.path == "/log":
            query = parse_qs(url.query)
            n = int(query.get("n", ["1"])[0])
            text = query.get("text", ["line"])[0]
            for i in range(n):
                print(f"{text} {i}", flush=True)
            self._send(200, "logged")
        elif url.path == "/crash":
            self._send(200, "crashing")
            print("crashing on request", file=sys.stderr, flush=True)
            os._exit(3)
        else:
            self._send(404, "not found")

    def do_POST(self):
        if urlsplit(self.path).path != "/data":
            return self._send(404, "not found")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = DATA_DIR / "value.txt.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, DATA_DIR / "value.txt")
        self._send(200, "stored")

    do_PUT = do_POST

    def log_message(self, format, *args):
        print(
            f"request {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True
        )


def main():
    # START_DELAY=N plays a service that loads a model before it listens.
    delay = float(os.environ.get("START_DELAY", "0"))
    if delay:
        print(f"loading the model, {delay:g} s", flush=True)
        time.sleep(delay)
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = True

    def on_term(signum, frame):
        print("got SIGTERM, bye", flush=True)
        os._exit(0)

    # IGNORE_SIGTERM=1 plays a service that does not stop when asked (tests of kill timeouts).
    if os.environ.get("IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    print(f"echo-service listening on {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
