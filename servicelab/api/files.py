"""Project data on ML Lab's `/api/projects/{project}/files` paths.

Uploads are parsed as they arrive (python-multipart's push parser over the request
stream) and downloads are streamed from the store, so neither holds a file in memory.
Downloads honour a single `Range` and `If-None-Match`/`If-Range` with the sha256 as ETag.

The app wires this with `install(app)`: the store lives at `<data dir>/files`, and a
project's files go when the project is deleted.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from servicelab import envelope
from servicelab.auth import Identity
from servicelab.code_source import DATA_KEY
from servicelab.errors import problem
from servicelab.files import (
    DATA_TYPES,
    FileInfo,
    FileNotFound,
    FileStore,
    FileStoreError,
    FileTooLarge,
    InvalidKey,
    InvalidRange,
    LocalFileStore,
    NotRunnable,
    QuotaExceeded,
)
from servicelab.spec import InvalidName, normalize_name

from .deps import authority, current_identity
from .errors import ApiError
from .serializers import epoch_ms

router = APIRouter(prefix="/api/projects/{project}/files", tags=["files"])

#: Bytes a multipart body may have beside its file (boundaries, part headers, fields).
_MULTIPART_ROOM = 64 * 1024

#: ML Lab's clients send `dataset`, `model`...; the keys use the plural.
_DATA_TYPE_ALIASES = {t: t for t in DATA_TYPES} | {t[:-1]: t for t in DATA_TYPES}

#: User metadata comes as ML Lab's (and S3's) `x-amz-meta-<name>` request headers.
METADATA_PREFIX = "x-amz-meta-"
#: S3's limit for user metadata: names and values together.
MAX_METADATA_BYTES = 2048
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def install(app: FastAPI) -> None:
    """Add the file routes and the store to the lab's FastAPI app."""
    store = LocalFileStore(app.state.settings.data_dir / "files")
    store.remove_stale_temp_files()
    app.state.files = store
    app.state.project_cleanups.append(store.delete_project)
    app.include_router(router)


def file_store(request: Request) -> FileStore:
    store: FileStore = request.app.state.files
    return store


def file_project(
    project: str, request: Request, identity: Identity = Depends(current_identity)
) -> str:
    """The project's name, when the caller may open it.

    Unlike `project_context` this holds no database session, which a long upload or
    download would otherwise keep for its whole duration.
    """
    try:
        name = normalize_name(project, what="project name")
    except InvalidName:
        raise ApiError(404, f"Project {project!r} was not found.", code="not_found") from None
    ref = authority(request).project(name)
    if ref is None:
        raise ApiError(404, f"Project {name!r} was not found.", code="not_found")
    if not authority(request).can_open(identity, ref):  # as if absent: names stay secret
        raise ApiError(404, f"Project {name!r} was not found.", code="not_found")
    return ref.name


@contextmanager
def _store_errors() -> Iterator[None]:
    """The store's errors as API errors, as `servicelab.errors`' table says."""
    try:
        yield
    except FileStoreError as exc:
        found = problem(exc)
        if found is None:
            raise
        raise ApiError(found.status, found.message, code=found.code) from None


def file_out(info: FileInfo) -> dict[str, Any]:
    """A file as ML Lab's LabFile (`hash`, `modifiedAt` in epoch ms, `modifiedBy`,
    `metadata`...), with the same facts under servicelab's names beside them."""
    return {
        "key": info.key,
        "name": info.name,
        "dataType": info.data_type,
        "version": info.version,
        "size": info.size,
        "hash": info.sha256,
        "sha256": info.sha256,
        "modifiedAt": epoch_ms(info.created),
        "createdAt": epoch_ms(info.created),
        "modifiedBy": info.uploader,
        "uploader": info.uploader,
        "contentType": info.content_type or _guess_type(info.name),
        "description": info.metadata.get("description"),
        "metadata": dict(info.metadata),
    }


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def upload_metadata(request: Request) -> dict[str, str]:
    """The `x-amz-meta-*` headers of an upload, without the prefix (names lower-case)."""
    found: dict[str, str] = {}
    for header, value in request.headers.items():
        header = header.lower()
        if not header.startswith(METADATA_PREFIX):
            continue
        name = header[len(METADATA_PREFIX) :]
        if not _METADATA_NAME.match(name):
            raise ApiError(
                400,
                f"Invalid metadata header {header!r}: after {METADATA_PREFIX!r} use letters, "
                "digits, '_', '.' or '-'.",
                code="invalid_metadata",
            )
        found[name] = value
    size = sum(len(k.encode()) + len(v.encode()) for k, v in found.items())
    if size > MAX_METADATA_BYTES:
        raise ApiError(
            400,
            f"The x-amz-meta-* metadata has {size} bytes; at most {MAX_METADATA_BYTES} are kept.",
            code="invalid_metadata",
        )
    return found


def _data_type(value: str) -> str:
    data_type = _DATA_TYPE_ALIASES.get(value.strip().lower())
    if data_type is None:
        raise ApiError(
            400,
            f"Invalid dataType {value!r}: use one of {', '.join(DATA_TYPES)}.",
            code="invalid_key",
        )
    return data_type


async def check_code_source(request: Request, project: str, code: str) -> None:
    """When a code service's source is a data key, its file must exist and be runnable:
    checked at deploy, so that a bad archive is a 400 that names the problem."""
    key = code.strip()
    if not DATA_KEY.match(key):
        return
    store: FileStore = request.app.state.files
    try:
        await store.check_code(project, key)
    except FileNotFound:
        raise ApiError(
            400,
            f"EXECUTE_CODE {key!r}: project {project!r} has no such file; upload it first.",
            code="invalid_code",
        ) from None
    except (InvalidKey, NotRunnable) as exc:
        raise ApiError(400, str(exc), code="invalid_code") from None


# --- upload -----------------------------------------------------------------------------


class UploadError(Exception):
    """A malformed or incomplete upload body (400)."""


class _FilePart:
    """Pulls the part named `file` out of a multipart body as it streams in.

    The push parser calls back with slices of each network chunk; slices of the file part
    are collected and handed on after each chunk, so memory stays at about one chunk.
    """

    FIELD = "file"

    def __init__(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._pending: list[bytes] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._in_file = False
        self.found = False
        self.finished = False
        self.filename: str | None = None
        self.content_type: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # parser callbacks

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.FIELD and not self.found:
            self.found = self._in_file = True
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None
            self.content_type = self._headers.get("content-type") or None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.finished = True

    # driving

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False at its end."""
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            self._parser.finalize()
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise UploadError(f"The multipart body is malformed: {exc}") from None
        return True

    async def start(self) -> None:
        """Read until the file part's headers (its file name) are known."""
        while not self.found:
            if not await self._feed():
                raise UploadError(f"The multipart body has no field named '{self.FIELD}'.")

    async def chunks(self) -> AsyncIterator[bytes]:
        ended = False
        while True:
            if self._pending:  # what start() or the last chunk brought
                data = b"".join(self._pending)
                self._pending.clear()
                yield data
            if self.finished:
                break
            if ended:
                raise UploadError("The upload ended before the file was complete.")
            ended = not await self._feed()
        # Drain the closing boundary, so the client sees its whole body consumed.
        while await self._feed():
            self._pending.clear()


async def _raw_chunks(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk


@router.post("/upload", summary="Upload a file (multipart field `file`); returns its key")
async def upload(
    request: Request,
    project: str = Depends(file_project),
    data_type: str | None = Query(default=None, alias="dataType"),
    file_name: str | None = Query(default=None, alias="fileName"),
    versioning: bool = Query(default=True),
    identity: Identity = Depends(current_identity),
    store: FileStore = Depends(file_store),
) -> dict:
    if not data_type:
        raise ApiError(400, f"Give 'dataType': one of {', '.join(DATA_TYPES)}.")
    kind = _data_type(data_type)
    metadata = upload_metadata(request)
    settings = request.app.state.settings
    max_size = int(settings.max_upload_size) or None
    content_type, options = parse_options_header(request.headers.get("content-type"))
    # Refused before reading when the body is too large even without a multipart
    # envelope; the exact limits are checked on the bytes of the file itself.
    length = request.headers.get("content-length", "")
    envelope_room = _MULTIPART_ROOM if content_type == b"multipart/form-data" else 0
    announced = max(0, int(length) - envelope_room) if length.isdigit() else None
    if max_size and announced and announced > max_size:
        raise ApiError(413, _too_large(max_size), code="payload_too_large")
    quota_left = await _quota_left(store, project, int(settings.project_quota), announced)
    body = request.stream()
    try:
        if content_type == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                raise UploadError("The multipart Content-Type has no boundary.")
            part = _FilePart(boundary, body.__aiter__())
            await part.start()
            chunks = part.chunks()
            name = file_name or _base_name(part.filename)
            part_type = part.content_type
        else:
            # A raw body (curl --data-binary) is the file itself.
            chunks = _raw_chunks(body)
            name = file_name
            part_type = content_type.decode("latin-1") or None
        if not name:
            raise ApiError(400, "Give 'fileName', or send the file with a file name.")
        with _store_errors():
            info = await store.put(
                project,
                kind,
                name,
                _limited(chunks, max_size, project, quota_left),
                identity.username,
                versioning=versioning,
                metadata=metadata,
                content_type=_stored_type(part_type),
            )
    except UploadError as exc:
        raise ApiError(400, str(exc), code="bad_upload") from None
    except ClientDisconnect:
        raise ApiError(400, "The client went away before the upload was complete.") from None
    # As in ML Lab, a file uploaded without versioning has a key without a version.
    key = info.key if versioning else f"{info.data_type}/{info.name}"
    return envelope.success(key, message=f"Uploaded {info.key} ({info.size} bytes).")


def _stored_type(value: str | None) -> str | None:
    """A sender's content type worth keeping: not the generic ones clients always send."""
    if not value or value.split(";")[0].strip().lower() in (
        "application/octet-stream",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        return None
    return value[:255]


def _too_large(max_size: int) -> str:
    return (
        f"The file is larger than the upload limit of {max_size} bytes "
        "(the lab's SERVICELAB_MAX_UPLOAD_SIZE)."
    )


@dataclass(frozen=True)
class _QuotaLeft:
    quota: int
    used: int

    @property
    def left(self) -> int:
        return self.quota - self.used

    def message(self, project: str) -> str:
        return (
            f"Project {project!r} has a storage quota of {self.quota} bytes and uses "
            f"{self.used}, which leaves {max(0, self.left)}: this upload does not fit. "
            "Delete files (or old versions) first, or ask an admin to raise "
            "SERVICELAB_PROJECT_QUOTA."
        )


async def _quota_left(
    store: FileStore, project: str, quota: int, announced: int | None
) -> _QuotaLeft | None:
    """What the project may still store, when it has a quota. Checked against what was
    stored when the upload began: uploads running side by side may together pass it."""
    if not quota:
        return None
    with _store_errors():
        left = _QuotaLeft(quota, await store.usage(project))
    if announced is not None and announced > left.left:
        raise ApiError(413, left.message(project), code="quota_exceeded")
    return left


async def _limited(
    chunks: AsyncIterator[bytes], max_size: int | None, project: str, quota: _QuotaLeft | None
) -> AsyncIterator[bytes]:
    """The upload's bytes, stopped (the store then removes what it wrote) once they pass
    the upload limit or the project's quota."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if max_size is not None and size > max_size:
            raise FileTooLarge(_too_large(max_size))
        if quota is not None and size > quota.left:
            raise QuotaExceeded(quota.message(project))
        yield chunk


def _base_name(filename: str | None) -> str | None:
    """A browser's file name without any folder it may carry (`C:\\x\\a.csv` -> `a.csv`)."""
    if not filename:
        return None
    return filename.replace("\\", "/").rsplit("/", 1)[-1] or None


# --- download ---------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range `header` asks for, as (start, end exclusive).

    None: serve the whole file (no header, another unit, several ranges or bad syntax,
    which RFC 9110 says to ignore). Raises InvalidRange when no byte of it exists.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise InvalidRange(f"Range {header!r} selects no byte of a {size}-byte file.")
        return max(0, size - length), size
    start = int(first)
    if last and not last.isdigit():
        return None
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise InvalidRange(f"Range {header!r} starts after the end of a {size}-byte file.")
    return start, end


@router.get("/download", summary="Download a file (streamed, with Range)")
@router.head("/download", include_in_schema=False)
async def download(
    request: Request,
    file_key: str = Query(alias="fileKey"),
    project: str = Depends(file_project),
    store: FileStore = Depends(file_store),
) -> Response:
    with _store_errors():
        info = await store.info(project, file_key)
    etag = f'"{info.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        # `size=` last: ML Lab's client reads the size for its progress bar from there.
        "Content-Disposition": _disposition(info),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: send everything
    try:
        selected = parse_range(range_header, info.size)
    except InvalidRange as exc:
        return Response(
            json.dumps(envelope.error(416, str(exc))),
            status_code=416,
            media_type="application/json",
            headers={"Content-Range": f"bytes */{info.size}", "Accept-Ranges": "bytes"},
        )
    status = 200
    start, end = 0, info.size
    if selected is not None:
        status, (start, end) = 206, selected
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    with _store_errors():
        # The exact version from `info`: a newer upload meanwhile must not change the bytes.
        stream = await store.open_range(project, info.key, start, end)
    return StreamingResponse(
        stream, status_code=status, headers=headers, media_type="application/octet-stream"
    )


def _disposition(info: FileInfo) -> str:
    name = info.name.rsplit("/", 1)[-1].replace('"', "")
    return f'attachment; filename="{name}"; size={info.size}'


# --- info, list, delete -----------------------------------------------------------------


@router.get("/info", summary="A file's metadata")
async def info(
    file_key: str = Query(alias="fileKey"),
    project: str = Depends(file_project),
    store: FileStore = Depends(file_store),
) -> dict:
    with _store_errors():
        found = await store.info(project, file_key)
    return envelope.success(file_out(found))


@router.get("", summary="The project's files: the latest version of each, or all versions")
async def list_files(
    project: str = Depends(file_project),
    data_type: str | None = Query(default=None, alias="dataType"),
    prefix: str | None = Query(default=None),
    all_versions: bool = Query(default=False, alias="allVersions"),
    aggregate_versions: bool = Query(
        default=True, alias="aggregateVersions", description="ML Lab's: false lists every version"
    ),
    store: FileStore = Depends(file_store),
) -> dict:
    with _store_errors():
        found = await store.list(
            project,
            prefix or None,
            _data_type(data_type) if data_type else None,
            all_versions=all_versions or not aggregate_versions,
        )
    return envelope.success([file_out(i) for i in found])


@router.delete(
    "", summary="Delete one version (versioned key), every version, or all but the newest"
)
async def delete_file(
    file_key: str = Query(alias="fileKey"),
    keep_latest_versions: int = Query(
        default=0,
        alias="keepLatestVersions",
        ge=0,
        description="ML Lab's: keep the newest N versions of the key's name, delete the rest",
    ),
    project: str = Depends(file_project),
    store: FileStore = Depends(file_store),
) -> dict:
    with _store_errors():
        if keep_latest_versions:
            deleted = await store.delete_older(project, file_key, keep_latest_versions)
        else:
            deleted = await store.delete(project, file_key)
    keys = [i.key for i in deleted]
    message = f"Deleted {', '.join(keys)}." if keys else "Nothing to delete."
    return envelope.success(keys, message=message)
