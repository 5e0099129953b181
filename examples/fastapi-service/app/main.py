"""An example service that follows every best practice of ML Lab's service guide.

- Parameters come from environment variables whose defaults are in the Dockerfile
  (`GREETING`); internal ones start with an underscore (`_DATA_PATH`).
- Persisted data lives in `/data` (the visit counter).
- It serves from a relative path: behind servicelab's proxy it is reached at
  `/api/projects/<project>/services/<service>/<port>/`, so its root path (used by `/docs`
  to find `openapi.json`) comes from the proxy's `X-Forwarded-Prefix` header, or else
  from `LAB_SERVICE_PATH` plus its port, as ML Lab services did.
- It logs to stdout and never shows the value of a token.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("example")

#: The ML Lab variables a service is given; only their names are ever shown.
LAB_VARIABLES = ("LAB_ENDPOINT", "LAB_API_TOKEN", "LAB_PROJECT", "LAB_SERVICE_PATH")


def greeting() -> str:
    return os.environ.get("GREETING", "Hello")


def port() -> int:
    return int(os.environ.get("PORT") or 8080)


def data_dir() -> Path:
    return Path(os.environ.get("_DATA_PATH") or "/data")


def configured_root_path() -> str:
    """LAB_SERVICE_PATH is the service's base path, to which a service adds its port."""
    base = os.environ.get("LAB_SERVICE_PATH", "").strip()
    if not base:
        return ""
    return f"/{base.strip('/')}/{port()}"


class RootPathMiddleware:
    """Set the ASGI root path per request, so links and `/docs` work under the proxy.

    Starlette routes both ways once `root_path` is set: a path with the prefix removed
    (ML Lab's proxy) and the whole path (a proxy that keeps the prefix).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.fallback = configured_root_path()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            prefix = ""
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-prefix":
                    prefix = value.decode("latin-1").strip()
                    break
            prefix = (prefix or self.fallback).rstrip("/")
            if prefix:
                scope = dict(scope, root_path=prefix)
        await self.app(scope, receive, send)


app = FastAPI(
    title="servicelab example service",
    description="A FastAPI service that follows every best practice of the service guide.",
    version="1.0.0",
)
app.add_middleware(RootPathMiddleware)

_visits_lock = threading.Lock()


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file, fsync and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.get("/")
def index() -> dict[str, Any]:
    """The greeting and which LAB_* variables are set (names only, never values)."""
    return {
        "greeting": greeting(),
        "service": "servicelab-example-fastapi",
        "lab_variables": [name for name in LAB_VARIABLES if os.environ.get(name)],
    }


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/env-check")
def env_check(request: Request) -> dict[str, Any]:
    """What tests want to know about how the service was started and reached."""
    return {
        "greeting": greeting(),
        "port": port(),
        "lab_variables": sorted(k for k in os.environ if k.startswith("LAB_")),
        "has_api_token": bool(os.environ.get("LAB_API_TOKEN")),
        "LAB_PROJECT": os.environ.get("LAB_PROJECT"),
        "LAB_SERVICE_PATH": os.environ.get("LAB_SERVICE_PATH"),
        "LAB_ENDPOINT": os.environ.get("LAB_ENDPOINT"),
        "root_path": request.scope.get("root_path", ""),
        "data_dir": str(data_dir()),
    }


@app.get("/request-info")
def request_info(request: Request) -> dict[str, Any]:
    """The request as the service received it (header values only for forwarding headers)."""
    return {
        "method": request.method,
        "path": request.url.path,
        "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
        "root_path": request.scope.get("root_path", ""),
        "query_params": sorted(request.query_params.keys()),
        "header_names": sorted({name.lower() for name in request.headers}),
        "forwarded": {
            name: value
            for name, value in request.headers.items()
            if name.lower().startswith(("x-forwarded-", "x-lab-"))
        },
    }


@app.get("/visits")
def visits() -> dict[str, Any]:
    """Count visits in /data, so a test can see the data survive a restart."""
    path = data_dir() / "visits.json"
    with _visits_lock:
        try:
            count = int(json.loads(path.read_text())["visits"])
        except FileNotFoundError:
            count = 0
        count += 1
        _write_atomic(path, json.dumps({"visits": count}))
    logger.info("visit %d", count)
    return {"visits": count, "file": str(path)}
