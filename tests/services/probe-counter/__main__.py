"""A test service that counts what reaches it, to see what health probes cost its log.

`/` answers $ROOT_STATUS (default 200). With UNDER_PREFIX=1 it serves only below
$LAB_SERVICE_URL (as an app given its base path does) and answers 404 elsewhere.
`/stats` answers the connections it accepted and the requests it got by user agent.
Prints one log line per request with the user agent, as access logs do.
"""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8091"))
ROOT_STATUS = int(os.environ.get("ROOT_STATUS", "200"))
PREFIX = os.environ["LAB_SERVICE_URL"].rstrip("/") if os.environ.get("UNDER_PREFIX") else ""
LOCK = threading.Lock()
STATS = {"connections": 0, "requests": {}}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        agent = self.headers.get("User-Agent", "")
        with LOCK:
            STATS["requests"][agent] = STATS["requests"].get(agent, 0) + 1
        print(f"GET {self.path} from {agent}", flush=True)
        if not self.path.startswith(PREFIX + "/"):
            return self._send(404, "not under my base path")
        path = self.path[len(PREFIX) :]
        if path == "/":
            return self._send(ROOT_STATUS, "root")
        if path == "/stats":
            with LOCK:
                return self._send(200, json.dumps(STATS))
        return self._send(404, "no such page")

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # one line per request is printed above


class Server(ThreadingHTTPServer):
    def verify_request(self, request, client_address):
        with LOCK:
            STATS["connections"] += 1
        return True


# All addresses in a container (the proxy comes from outside it), else loopback.
IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
Server(("0.0.0.0" if IN_CONTAINER else "127.0.0.1", PORT), Handler).serve_forever()
