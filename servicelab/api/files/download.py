"""`GET|HEAD .../files/download`: a file streamed from the store, honouring a single
`Range` and `If-None-Match`/`If-Range` with the sha256 as ETag."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from servicelab import envelope
from servicelab.files import (
    FileInfo,
    FileStore,
    InvalidRange,
)

from .common import PREFIX, file_project, file_store, store_errors

router = APIRouter(prefix=PREFIX, tags=["files"])


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
    with store_errors():
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
    with store_errors():
        # The exact version from `info`: a newer upload meanwhile must not change the bytes.
        stream = await store.open_range(project, info.key, start, end)
    return StreamingResponse(
        stream, status_code=status, headers=headers, media_type="application/octet-stream"
    )


def _disposition(info: FileInfo) -> str:
    name = info.name.rsplit("/", 1)[-1].replace('"', "")
    return f'attachment; filename="{name}"; size={info.size}'
