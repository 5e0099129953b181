"""`POST .../files/upload`: a multipart (or raw) body streamed into the store, within
the upload limit and the project's quota, with `x-amz-meta-*` headers as metadata."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Query, Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from servicelab import envelope
from servicelab.auth import Identity
from servicelab.files import (
    DATA_TYPES,
    FileStore,
    FileTooLarge,
    QuotaExceeded,
)

from ..deps import current_identity, lab
from ..errors import ApiError
from .common import PREFIX, file_project, file_store, parse_data_type, store_errors
from .multipart import FilePart, UploadError, raw_chunks

router = APIRouter(prefix=PREFIX, tags=["files"])

#: Bytes a multipart body may have beside its file (boundaries, part headers, fields).
_MULTIPART_ROOM = 64 * 1024

#: User metadata comes as ML Lab's (and S3's) `x-amz-meta-<name>` request headers.
METADATA_PREFIX = "x-amz-meta-"
#: S3's limit for user metadata: names and values together.
MAX_METADATA_BYTES = 2048
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


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
    kind = parse_data_type(data_type)
    metadata = upload_metadata(request)
    settings = lab(request).settings
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
            part = FilePart(boundary, body.__aiter__())
            await part.start()
            chunks = part.chunks()
            name = file_name or _base_name(part.filename)
            part_type = part.content_type
        else:
            # A raw body (curl --data-binary) is the file itself.
            chunks = raw_chunks(body)
            name = file_name
            part_type = content_type.decode("latin-1") or None
        if not name:
            raise ApiError(400, "Give 'fileName', or send the file with a file name.")
        with store_errors():
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
    with store_errors():
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
