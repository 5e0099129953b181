"""A hostile service page, for the service-origin tests (standard library only).

Deployed twice: once as the attacker's page, once as a victim that is as careless as an
app can be (it reflects any Origin with credentials allowed in CORS) so that only the
lab's rules stand between the two.

Routes: `/` (the attack page: runs every attempt of `attempts.js`, inlined, and lists in
`window.results` which succeeded), `/whoami` (the Cookie header it got,
as JSON), `/ws` (a WebSocket that says "hello"), `/setcookie` (tries to set the lab's
cookies, and one of its own), POST anywhere (what was posted and the cookies it got).
Listens on 127.0.0.1:$PORT (default 8091).
"""

import base64
import hashlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PORT = int(os.environ.get("PORT", "8091"))
HERE = Path(__file__).resolve().parent
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>hostile</title></head>
<body><h1>Nothing to see here</h1><pre id="results"></pre>
<form id="userform" method="post" target="sink"></form>
<iframe name="sink" style="display:none"></iframe>
<script>%s</script></body></html>"""


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type="text/plain", extra=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        origin = self.headers.get("Origin")
        if origin:  # the careless victim: any origin, with credentials
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/":
            # Inline: a sandboxed page (no origin of its own) loads nothing with the cookie.
            script = (HERE / "attempts.js").read_text()
            self._send(200, PAGE % script, "text/html; charset=utf-8")
        elif path == "/whoami":
            self._send(
                200, json.dumps({"cookie": self.headers.get("Cookie", "")}), "application/json"
            )
        elif path == "/setcookie":
            cookies = [
                ("Set-Cookie", "lab_access_token=forged-by-service; Path=/"),
                ("Set-Cookie", "servicelab_service=forged-by-service; Path=/"),
                ("Set-Cookie", "own=kept; Path=/"),
            ]
            self._send(200, "set", extra=cookies)
        elif path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        else:
            self._send(404, "not found")

    def do_POST(self):
        # The victim's own form: answers with what was posted and the cookies it got.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        seen = {"posted": body, "cookie": self.headers.get("Cookie", "")}
        self._send(200, json.dumps(seen), "application/json")

    def _websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.write(b"\x81\x05hello")  # one text frame
        self.wfile.flush()
        self.rfile.read(2)  # until the client closes
        self.close_connection = True

    def log_message(self, format, *args):
        print("hostile-page:", format % args, flush=True)


print(f"hostile-page listening on {PORT}", flush=True)
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
