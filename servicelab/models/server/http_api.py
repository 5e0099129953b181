"""The model's HTTP API: the Open Inference Protocol (V2) over REST, and ML Lab's
`POST /predict` and `GET /info` beside it.

    GET  /v2/health/live, /v2/health/ready, /v2/models/{name}/ready
    GET  /v2                          server metadata
    GET  /v2/models/{name}            model metadata (inputs, outputs)
    POST /v2/models/{name}/infer      {"inputs": [{"name", "shape", "datatype", "data"}]}
    POST /predict                     [[...], ...] or [{...}, ...] -> {"predictions": [...]}
    GET  /info                        format, framework, version, signature

The port opens only once the model has loaded, so "ready" always means "can predict".
Standard library only (`http.server`, a thread per connection, HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tensors import BadRequest, decode, encode

SERVER = "servicelab-models"
VERSION = "1"
#: Request bodies larger than this are refused (413).
MAX_BODY = 64 * 1024 * 1024

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?/?$")


class ModelApp:
    """What the handler serves: one loaded model under one name."""

    def __init__(self, name: str, model: Any, info: dict[str, Any]) -> None:
        self.name = name
        self.model = model
        self.info = info

    def metadata(self) -> dict[str, Any]:
        inputs, outputs = self.model.signature()
        return {
            "name": self.name,
            "versions": [],
            "platform": self.info["framework"],
            "inputs": inputs,
            "outputs": outputs,
        }

    def infer(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise BadRequest('The request needs "inputs": a list of tensors.')
        if not body["inputs"]:
            raise BadRequest('"inputs" is empty: give at least one tensor.')
        inputs = dict(decode(t) for t in body["inputs"])
        wanted = body.get("outputs")
        names = None
        if wanted is not None:
            if not isinstance(wanted, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
            ):
                raise BadRequest('"outputs" must be a list of {"name": ...} objects.')
            names = [o["name"] for o in wanted]
        outputs = self.model.infer(inputs, names)
        response: dict[str, Any] = {
            "model_name": self.name,
            "outputs": [encode(name, value) for name, value in outputs],
        }
        if "id" in body:
            response["id"] = body["id"]
        return response


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"{SERVER}/{VERSION}"
    app: ModelApp  # set on the subclass made by `serve`

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK, 40 ms per request on keep-alive.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request would drown the service's log

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raise BadRequest("Send the body with a Content-Length, not chunked.")
            raise BadRequest("Send a JSON body.")
        if int(length) > MAX_BODY:
            raise _TooLarge(f"The body is larger than {MAX_BODY} bytes.")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"The body is not JSON: {exc}") from None

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            status, body = self._route(method, path)
        except BadRequest as exc:
            status, body = 400, {"error": str(exc)}
        except _TooLarge as exc:
            status, body = 413, {"error": str(exc)}
            self.close_connection = True
        except Exception as exc:  # the model failed on this input: say why, keep serving
            traceback.print_exc(file=sys.stderr)
            status, body = 500, {"error": f"The model failed: {type(exc).__name__}: {exc}"}
        self._send(status, body)

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        app = self.app
        if path in ("/v2/health/live", "/v2/health/ready"):
            return 200, {"live": True} if path.endswith("live") else {"ready": True}
        if path in ("/v2", "/v2/"):
            return 200, {"name": SERVER, "version": VERSION, "extensions": []}
        if path in ("/", "/info"):
            if method != "GET":
                return 405, {"error": f"Use GET for {path}."}
            return 200, {
                **app.info,
                "signature": dict(zip(("inputs", "outputs"), app.model.signature(), strict=True)),
            }
        if path == "/predict":
            if method != "POST":
                return 405, {"error": "Use POST for /predict, with a JSON list of rows or records."}
            started = time.perf_counter()
            predictions = app.model.predict(self._body())
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            return 200, {"predictions": predictions, "model": app.name, "durationMs": elapsed}
        match = _MODEL_PATH.match(path)
        if match is None:
            return 404, {
                "error": f"No route {path}: see /info, /predict and /v2/models/{app.name}."
            }
        name, _, action = match.groups()
        if name != app.name:
            return 404, {"error": f"Model {name!r} is not served here; this serves {app.name!r}."}
        if action == "/infer":
            if method != "POST":
                return 405, {"error": "Use POST for infer."}
            return 200, app.infer(self._body())
        if method != "GET":
            return 405, {"error": f"Use GET for {path}."}
        if action == "/ready":
            return 200, {"name": app.name, "ready": True}
        return 200, app.metadata()


class _TooLarge(Exception):
    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve(app: ModelApp, host: str, port: int) -> None:
    handler = type("BoundHandler", (Handler,), {"app": app})
    with Server((host, port), handler) as server:
        print(f"[model] serving {app.name} on {host}:{port}", file=sys.stderr, flush=True)
        server.serve_forever()
