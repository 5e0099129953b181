"""A service with one dependency in requirements.txt: answers with the version it imported.

Listens on $PORT (default 8091); `/` answers "six <version>".
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import six


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"six {six.__version__}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8091"))
    print(f"with-requirements listening on {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
