"""A minimal, real, read-only Docker registry (HTTP API v2) on 127.0.0.1, for pull tests.

No registry on the internet is reachable from the test machines, so the tests serve images
themselves. Docker treats registries on 127.0.0.0/8 as insecure, so plain HTTP works and
`docker pull 127.0.0.1:<port>/demo/example:1` reaches this server.

Images come from the engine itself: `export_image` runs `docker save` and turns the result
into registry blobs (the config, and each layer gzipped, as `docker push` would). That
export is slow (a few hundred MB), so it is cached on disk, keyed by the image id.

`Registry.serve` adds a *variant* of an exported image: the same layers plus a small layer
of random bytes of its own. The variant's config, and so its image id, is new, so the engine
really pulls it (Docker skips a pull whose image id it has); its base layers are those the
engine has already, so after the first run only the small layer travels. `hold` makes the
download of such a layer stop half-way until the test releases it: a pull that lasts
exactly as long as the test needs to watch it, with no guessed delays.

Served: `GET /v2/`, `HEAD|GET /v2/<name>/manifests/<tag or digest>` (schema 2),
`HEAD|GET /v2/<name>/blobs/<digest>`, `GET /v2/<name>/tags/list`; anything else is the
registry's JSON error with 404 (or 405 for a write).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, BinaryIO

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Fast gzip: the export is for a test, not for storage.
GZIP_LEVEL = 1
CHUNK = 1 << 20
#: Size of a variant's own layer, and how much of it a held download sends before waiting.
MARKER_SIZE = 1 << 20
HELD_BYTES = 256 << 10
#: A held download goes on by itself after this long, so that a failed test never leaves
#: the engine's pull (and the lab's deploy request) hanging.
HOLD_DEADLINE = 120.0

_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- blobs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A blob's bytes, in memory or in a file (layers are hundreds of MB)."""

    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # sha256 of the uncompressed tar: what the image config lists


@dataclass(frozen=True)
class ExportedImage:
    """An engine image as a registry holds it: its config and its gzipped layers."""

    image_id: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Served:
    """One image as this registry serves it under a name and tags."""

    name: str
    tags: tuple[str, ...]
    digest: str  # of the manifest
    image_id: str  # the config's digest: the engine's id of the image once pulled
    marker: Layer  # the variant's own layer: the one a pull has to download


def gzip_stream(source: IO[bytes], target: IO[bytes]) -> tuple[str, str, int]:
    """Gzip `source` into `target`, deterministically (no name, no time in the header).

    Returns the digest of the uncompressed bytes, that of the gzipped bytes, and their size.
    Deterministic output matters: the engine remembers which blob digest holds which layer,
    so the same bytes next run are "Already exists" and not another download."""
    plain, packed = hashlib.sha256(), hashlib.sha256()
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    size = 0

    def put(data: bytes) -> None:
        nonlocal size
        if data:
            packed.update(data)
            target.write(data)
            size += len(data)

    while chunk := source.read(CHUNK):
        plain.update(chunk)
        put(compressor.compress(chunk))
    put(compressor.flush())
    return "sha256:" + plain.hexdigest(), "sha256:" + packed.hexdigest(), size


def marker_layer() -> Layer:
    """A layer of its own for a variant: one file of random bytes (incompressible, so the
    download is as long as MARKER_SIZE)."""
    token = secrets.token_hex(8)
    payload = os.urandom(MARKER_SIZE)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"servicelab-registry-marker/{token}")
        info.size = len(payload)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes.seek(0)
    packed = io.BytesIO()
    diff_id, digest, size = gzip_stream(tar_bytes, packed)
    return Layer(Blob(digest, size, data=packed.getvalue()), diff_id)


# --- export from the engine, cached --------------------------------------------------------


def export_image(client: Any, reference: str, cache_dir: Path) -> ExportedImage:
    """`reference` from the engine of `client` (a docker SDK client) as registry blobs.

    Cached in `cache_dir/<image id>/`; entries of images the engine no longer has are
    removed when a new one is made."""
    image = client.images.get(reference)
    entry = cache_dir / image.id.split(":", 1)[1]
    if not (entry / "index.json").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        _prune(client, cache_dir)
        _export_into(image, entry)
    return _load(entry)


def _export_into(image: Any, entry: Path) -> None:
    """Write the entry in a temporary folder and rename it into place: a reader never sees
    half an entry, and two sessions exporting at once both end with a whole one."""
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        saved = work / "image.tar"
        with saved.open("wb") as out:
            for chunk in image.save(chunk_size=CHUNK):
                out.write(chunk)
        index = _convert(saved, work)
        saved.unlink()
        _write_atomically(work / "index.json", json.dumps(index).encode())
        try:
            work.rename(entry)
        except OSError:
            if not (entry / "index.json").exists():
                raise  # not another session's entry: a real failure
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert(saved: Path, work: Path) -> dict[str, Any]:
    """The index of an entry from a `docker save` tar; gzipped layers go into `work`."""
    with tarfile.open(saved) as tar:
        manifest = json.loads(_member(tar, "manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"docker save gave {len(manifest)} images, expected one")
        config_bytes = _member(tar, manifest[0]["Config"])
        config = json.loads(config_bytes)
        layers = []
        for path in manifest[0]["Layers"]:
            member = tar.extractfile(path)
            if member is None:
                raise ValueError(f"docker save has no layer {path}")
            target = work / "layer.tmp"
            with member, target.open("wb") as out:
                diff_id, digest, size = gzip_stream(member, out)
                out.flush()
                os.fsync(out.fileno())
            target.rename(work / f"{digest.split(':', 1)[1]}.gz")
            layers.append({"digest": digest, "size": size, "diff_id": diff_id})
    if [layer["diff_id"] for layer in layers] != config["rootfs"]["diff_ids"]:
        raise ValueError("the exported layers do not match the image's rootfs.diff_ids")
    return {"image_id": sha256(config_bytes), "config": config, "layers": layers}


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"docker save has no {name}")
    with member:
        return member.read()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temporary.rename(path)


def _load(entry: Path) -> ExportedImage:
    index = json.loads((entry / "index.json").read_text())
    layers = tuple(
        Layer(
            Blob(item["digest"], item["size"], path=entry / f"{item['digest'].split(':')[1]}.gz"),
            item["diff_id"],
        )
        for item in index["layers"]
    )
    return ExportedImage(index["image_id"], index["config"], layers)


def _prune(client: Any, cache_dir: Path) -> None:
    """Drop entries of images the engine no longer has (the image was rebuilt), and
    temporary folders an interrupted export left more than an hour ago."""
    import docker.errors

    for path in cache_dir.iterdir():
        if path.name.startswith(".tmp-"):
            if time.time() - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            client.images.get("sha256:" + path.name)
        except docker.errors.ImageNotFound:
            shutil.rmtree(path, ignore_errors=True)
        except docker.errors.APIError:
            continue  # not an image id: not ours to judge


# --- the server ----------------------------------------------------------------------------


@dataclass
class Hold:
    """A download stopped half-way: `reached` is set once the engine is waiting for the
    rest, which it gets after `release()`."""

    digest: str
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


class Registry:
    """The server: start with `with Registry() as registry:` or `start()`/`stop()`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[Request] = []
        self._blobs: dict[str, Blob] = {}
        #: (repository name, tag or manifest digest) -> manifest digest
        self._refs: dict[tuple[str, str], str] = {}
        self._manifests: dict[str, bytes] = {}
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --

    def start(self) -> Registry:
        registry = self

        class Handler(_Handler):
            pass

        Handler.registry = registry
        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="test-registry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for hold in self._holds.values():
                hold.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>`: the registry part of an image reference."""
        assert self._server is not None, "start the registry first"
        return f"{self.host}:{self._server.server_address[1]}"

    def reference(self, name: str, tag: str) -> str:
        return f"{self.address}/{name}:{tag}"

    # -- content --

    def serve(self, name: str, tags: list[str] | tuple[str, ...], image: ExportedImage) -> Served:
        """Serve a new variant of `image` (its layers plus a marker layer of its own) as
        `name:tag` for each tag; a tag served before now points to the new variant."""
        marker = marker_layer()
        config = copy.deepcopy(image.config)
        config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], marker.diff_id]
        config.setdefault("history", []).append(
            {
                "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "created_by": "tests/registry.py: a layer of this variant's own",
            }
        )
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_blob = Blob(sha256(config_bytes), len(config_bytes), data=config_bytes)
        layers = [*image.layers, marker]
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_V1,
                "size": config_blob.size,
                "digest": config_blob.digest,
            },
            "layers": [
                {"mediaType": LAYER_GZIP, "size": layer.blob.size, "digest": layer.blob.digest}
                for layer in layers
            ],
        }
        manifest_bytes = json.dumps(manifest, indent=3).encode()
        digest = sha256(manifest_bytes)
        with self._lock:
            self._blobs[config_blob.digest] = config_blob
            for layer in layers:
                self._blobs[layer.blob.digest] = layer.blob
            self._manifests[digest] = manifest_bytes
            self._refs[(name, digest)] = digest
            for tag in tags:
                self._refs[(name, tag)] = digest
        return Served(name, tuple(tags), digest, config_blob.digest, marker)

    def hold(self, digest: str) -> Hold:
        """Stop the next download of blob `digest` half-way until `release()`."""
        hold = Hold(digest)
        with self._lock:
            self._holds[digest] = hold
        return hold

    def requested(self, method: str, path_end: str) -> int:
        """How many `method` requests for a path ending in `path_end` were answered."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path.endswith(path_end))

    # -- used by the handler --

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(Request(method, path, status))

    def _manifest(self, name: str, reference: str) -> tuple[str, bytes] | None:
        with self._lock:
            digest = self._refs.get((name, reference))
            return (digest, self._manifests[digest]) if digest else None

    def _has_name(self, name: str) -> bool:
        with self._lock:
            return any(n == name for n, _ in self._refs)

    def _tags(self, name: str) -> list[str]:
        with self._lock:
            return sorted(r for n, r in self._refs if n == name and not r.startswith("sha256:"))

    def _blob(self, digest: str) -> Blob | None:
        with self._lock:
            return self._blobs.get(digest)

    def _take_hold(self, digest: str) -> Hold | None:
        with self._lock:
            return self._holds.pop(digest, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "servicelab-test-registry/1"
    registry: Registry

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse_write(self) -> None:
        self._error(405, "UNSUPPORTED", "this test registry is read-only")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            self._send(200, b"{}", "application/json", body=body)
            return
        tags = _TAGS.match(path)
        if tags:
            name = tags.group("name")
            if not self.registry._has_name(name):
                self._error(404, "NAME_UNKNOWN", f"repository {name} not known to registry")
                return
            data = json.dumps({"name": name, "tags": self.registry._tags(name)}).encode()
            self._send(200, data, "application/json", body=body)
            return
        match = _PATH.match(path)
        if match is None:
            self._error(404, "UNSUPPORTED", f"{self.command} {path} is not served here")
            return
        name, kind, ref = match.group("name", "kind", "ref")
        if kind == "manifests":
            self._manifest(name, ref, body=body)
        else:
            self._blob(ref, body=body)

    def _manifest(self, name: str, ref: str, *, body: bool) -> None:
        found = self.registry._manifest(name, ref)
        if found is None:
            if not self.registry._has_name(name):
                self._error(404, "NAME_UNKNOWN", f"repository {name} not known to registry")
            else:
                self._error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}:{ref}")
            return
        digest, data = found
        self._send(200, data, MANIFEST_V2, body=body, digest=digest)

    def _blob(self, digest: str, *, body: bool) -> None:
        blob = self.registry._blob(digest)
        if blob is None:
            self._error(404, "BLOB_UNKNOWN", f"blob unknown to registry: {digest}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(blob.size))
        self.send_header("Docker-Content-Digest", blob.digest)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        self.registry._record(self.command, self.path, 200)
        if not body:
            return
        hold = self.registry._take_hold(digest)
        sent = 0
        with contextlib.suppress(ConnectionError), blob.open() as source:
            while chunk := source.read(CHUNK if hold is None else HELD_BYTES):
                self.wfile.write(chunk)
                sent += len(chunk)
                if hold is not None and sent >= HELD_BYTES:
                    self.wfile.flush()
                    hold.reached.set()
                    hold.released.wait(HOLD_DEADLINE)
                    hold = None
            self.wfile.flush()

    def _send(
        self, status: int, data: bytes, content_type: str, *, body: bool, digest: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if body:
            self.wfile.write(data)
        self.registry._record(self.command, self.path, status)

    def _error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"errors": [{"code": code, "message": message, "detail": {}}]}).encode()
        self._send(status, data, "application/json", body=self.command != "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the engine first tries TLS on this port: its garbage is expected, not news
