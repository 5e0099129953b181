"""What every files route shares: the store and the project it may open, the store's
errors as API errors, the data type (ML Lab's singular names too), a file as JSON."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, Request

from servicelab.auth import Identity
from servicelab.errors import problem
from servicelab.files import (
    DATA_TYPES,
    FileInfo,
    FileStore,
    FileStoreError,
)
from servicelab.spec import InvalidName, normalize_name

from ..deps import authority, current_identity, lab
from ..errors import ApiError
from ..serializers import epoch_ms

#: The files routes' path, ML Lab's.
PREFIX = "/api/projects/{project}/files"

#: ML Lab's clients send `dataset`, `model`...; the keys use the plural.
_DATA_TYPE_ALIASES = {t: t for t in DATA_TYPES} | {t[:-1]: t for t in DATA_TYPES}


def file_store(request: Request) -> FileStore:
    store: FileStore = lab(request).files
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
def store_errors() -> Iterator[None]:
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


def parse_data_type(value: str) -> str:
    data_type = _DATA_TYPE_ALIASES.get(value.strip().lower())
    if data_type is None:
        raise ApiError(
            400,
            f"Invalid dataType {value!r}: use one of {', '.join(DATA_TYPES)}.",
            code="invalid_key",
        )
    return data_type
