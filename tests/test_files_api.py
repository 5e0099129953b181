"""The files API on ML Lab's routes: upload, download with ranges, info, list, delete."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from servicelab.api import files as files_api
from servicelab.app import create_app

from .conftest import Lab, make_settings
from .labtools import ADMIN_PASSWORD

FILES = "/api/projects/demo/files"


def build_app(data_dir: Path) -> Any:
    app = create_app(make_settings(data_dir))
    inner = app.app  # create_app wraps the FastAPI app in the proxy
    if not any(
        getattr(r, "path", "").startswith("/api/projects/{project}/files") for r in inner.routes
    ):
        files_api.install(inner)  # until the app wires the router itself
    return app


@pytest.fixture
def flab(tmp_path: Path) -> Iterator[Lab]:
    app = build_app(tmp_path / "data")
    with TestClient(app) as client:
        r = client.get("/api/auth/login", auth=("admin", ADMIN_PASSWORD))
        assert r.status_code == 200, r.text
        client.cookies.clear()
        lab = Lab(client, app.app.state.lab.settings, str(r.json()["data"]))
        lab.create_project("demo")
        yield lab


def upload(
    lab: Lab, content: bytes, token: str | None = None, filename: str = "a.csv", **params: Any
) -> httpx.Response:
    params.setdefault("dataType", "datasets")
    return lab.post(f"{FILES}/upload", token, params=params, files={"file": (filename, content)})


def test_upload_versions_info_and_list(flab: Lab) -> None:
    r = upload(flab, b"one", fileName="a.csv")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == "datasets/a.csv.v1"
    assert upload(flab, b"two!", fileName="a.csv").json()["data"] == "datasets/a.csv.v2"
    # Without fileName the multipart file name is used; ML Lab's singular type works too.
    assert upload(flab, b"m", filename="net.pt", dataType="model").json()["data"] == (
        "models/net.pt.v1"
    )

    info = flab.get(f"{FILES}/info", params={"fileKey": "datasets/a.csv"}).json()["data"]
    assert info["key"] == "datasets/a.csv.v2" and info["size"] == 4 and info["version"] == 2
    assert info["hash"] == hashlib.sha256(b"two!").hexdigest()
    assert info["modifiedBy"] == "admin" and info["dataType"] == "datasets"

    keys = [f["key"] for f in flab.get(FILES).json()["data"]]
    assert keys == ["datasets/a.csv.v2", "models/net.pt.v1"]
    r = flab.get(FILES, params={"dataType": "dataset", "allVersions": "true"})
    assert [f["key"] for f in r.json()["data"]] == ["datasets/a.csv.v1", "datasets/a.csv.v2"]
    r = flab.get(FILES, params={"prefix": "models/"})
    assert [f["key"] for f in r.json()["data"]] == ["models/net.pt.v1"]


def test_raw_body_upload(flab: Lab) -> None:
    r = flab.client.post(
        f"{FILES}/upload",
        params={"dataType": "backups", "fileName": "b.bin"},
        content=b"raw bytes",
        headers={**flab.headers(), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    r = flab.get(f"{FILES}/download", params={"fileKey": r.json()["data"]})
    assert r.content == b"raw bytes"


def test_download_and_ranges(flab: Lab) -> None:
    body = bytes(range(256)) * 4
    key = upload(flab, body, fileName="blob.bin").json()["data"]
    etag = f'"{hashlib.sha256(body).hexdigest()}"'

    def get(**headers: str) -> httpx.Response:
        return flab.client.get(
            f"{FILES}/download",
            params={"fileKey": "datasets/blob.bin"},
            headers={**flab.headers(), **headers},
        )

    r = get()
    assert r.status_code == 200 and r.content == body
    assert r.headers["etag"] == etag and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["content-type"] == "application/octet-stream"
    assert 'filename="blob.bin"' in r.headers["content-disposition"]
    assert key == "datasets/blob.bin.v1"

    r = get(Range="bytes=2-4")
    assert r.status_code == 206 and r.content == body[2:5]
    assert r.headers["content-range"] == f"bytes 2-4/{len(body)}"
    assert r.headers["content-length"] == "3"
    assert get(Range="bytes=-3").content == body[-3:]
    assert get(Range="bytes=1000-").content == body[1000:]
    assert get(Range="bytes=1000-5000").content == body[1000:]
    r = get(Range="bytes=5000-")
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(body)}"
    assert get(Range="bytes=0-1,5-6").status_code == 200  # several ranges: the whole file
    assert get(Range="lines=1-2").status_code == 200

    assert get(**{"If-None-Match": etag}).status_code == 304
    assert get(Range="bytes=0-0", **{"If-Range": '"stale"'}).status_code == 200
    assert get(Range="bytes=0-0", **{"If-Range": etag}).status_code == 206

    r = flab.client.head(f"{FILES}/download", params={"fileKey": key}, headers=flab.headers())
    assert r.status_code == 200 and r.headers["content-length"] == str(len(body))
    assert r.content == b""


def test_delete(flab: Lab) -> None:
    for body in (b"1", b"2", b"3"):
        upload(flab, body, fileName="a.csv")
    r = flab.delete(FILES, params={"fileKey": "datasets/a.csv.v2"})
    assert r.status_code == 200 and r.json()["data"] == ["datasets/a.csv.v2"]
    r = flab.delete(FILES, params={"fileKey": "datasets/a.csv"})
    assert r.json()["data"] == ["datasets/a.csv.v1", "datasets/a.csv.v3"]
    r = flab.delete(FILES, params={"fileKey": "datasets/a.csv"})
    assert r.status_code == 404 and r.json()["errors"]["type"] == "not_found"


def test_bad_input_is_a_clear_400(flab: Lab) -> None:
    r = flab.post(f"{FILES}/upload", files={"file": ("a.csv", b"x")})
    assert r.status_code == 400 and "dataType" in r.json()["errors"]["message"]
    r = upload(flab, b"x", dataType="pictures")
    assert r.status_code == 400 and "Invalid dataType" in r.json()["errors"]["message"]
    for name in ("../escape.csv", "a/../../b", "/etc/passwd", "a.csv.v3"):
        r = upload(flab, b"x", fileName=name)
        assert r.status_code == 400, name
        assert r.json()["errors"]["type"] == "invalid_key"
    for key in ("datasets/../x", "nope", "datasets/a\\b", "/datasets/a"):
        r = flab.get(f"{FILES}/info", params={"fileKey": key})
        assert r.status_code == 400, key
    r = flab.get(f"{FILES}/download", params={"fileKey": "datasets/missing.csv"})
    assert r.status_code == 404 and "missing.csv" in r.json()["errors"]["message"]
    r = flab.post(
        f"{FILES}/upload", params={"dataType": "datasets"}, files={"other": ("a.csv", b"x")}
    )
    assert r.status_code == 400 and "no field named 'file'" in r.json()["errors"]["message"]
    assert flab.get(FILES, params={"allVersions": "true"}).json()["data"] == []


def test_truncated_upload_stores_nothing(flab: Lab) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="a.csv"\r\n\r\npartial content'
    ).encode()
    r = flab.client.post(
        f"{FILES}/upload",
        params={"dataType": "datasets"},
        content=body,
        headers={**flab.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400 and "ended before" in r.json()["errors"]["message"]
    assert flab.get(FILES, params={"allVersions": "true"}).json()["data"] == []
    folder = flab.settings.data_dir / "files" / "demo" / "datasets"
    assert list(folder.iterdir()) == []  # no temp file left behind


def test_access(flab: Lab) -> None:
    key = upload(flab, b"secret data").json()["data"]
    r = flab.client.get(f"{FILES}/info", params={"fileKey": key})
    assert r.status_code == 401
    stranger = flab.create_user("stranger")
    # Not theirs: answered as if the project did not exist.
    assert flab.get(FILES, stranger).status_code == 404
    assert upload(flab, b"x", stranger).status_code == 404
    assert flab.get("/api/projects/nope/files").status_code == 404

    # A project token (a service's LAB_API_TOKEN) works for its own project only.
    token = flab.get("/api/projects/demo/token").json()["data"]
    assert upload(flab, b"from a service", token).status_code == 200
    assert flab.get(f"{FILES}/download", token, params={"fileKey": key}).content == b"secret data"
    flab.create_project("other")
    other = flab.get("/api/projects/other/token").json()["data"]
    assert flab.get(FILES, other).status_code == 404


def test_deleting_the_project_deletes_its_files(flab: Lab) -> None:
    upload(flab, b"x")
    folder = flab.settings.data_dir / "files" / "demo"
    assert folder.is_dir()
    assert flab.delete("/api/projects/demo").status_code == 200
    assert not folder.exists()


# --- a real server: uploads and downloads stream -------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The lab under uvicorn on 127.0.0.1; yields (base URL, admin token)."""
    app = build_app(tmp_path / "data")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        r = httpx.get(f"{base}/api/auth/login", auth=("admin", ADMIN_PASSWORD))
        token = r.json()["data"]
        r = httpx.post(
            f"{base}/api/projects",
            json={"name": "demo"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        yield base, token
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.mark.slow
def test_large_upload_and_download_stream(server: tuple[str, str]) -> None:
    """128 MiB through a real server: Python's memory must stay far below the file size."""
    base, token = server
    total, piece = 128 * 1024 * 1024, 256 * 1024
    block = bytes(range(256)) * (piece // 256)
    boundary = "streaming-boundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        for _ in range(total // piece):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    expected = hashlib.sha256()
    for _ in range(total // piece):
        expected.update(block)
    headers = {"Authorization": f"Bearer {token}"}
    tracemalloc.start()
    try:
        with httpx.Client(timeout=120) as client:
            r = client.post(
                f"{base}{FILES}/upload",
                params={"dataType": "models"},
                content=body(),
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"] == "models/big.bin.v1"
            digest, size = hashlib.sha256(), 0
            with client.stream(
                "GET",
                f"{base}{FILES}/download",
                headers=headers,
                params={"fileKey": "models/big.bin"},
            ) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total and digest.hexdigest() == expected.hexdigest()
    assert peak < 32 * 1024 * 1024, peak
