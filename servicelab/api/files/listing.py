"""A file's metadata, the project's files, and deleting them (versions, or all but the
newest)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from servicelab import envelope
from servicelab.files import (
    FileStore,
)

from .common import PREFIX, file_out, file_project, file_store, parse_data_type, store_errors

router = APIRouter(prefix=PREFIX, tags=["files"])


@router.get("/info", summary="A file's metadata")
async def info(
    file_key: str = Query(alias="fileKey"),
    project: str = Depends(file_project),
    store: FileStore = Depends(file_store),
) -> dict:
    with store_errors():
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
    with store_errors():
        found = await store.list(
            project,
            prefix or None,
            parse_data_type(data_type) if data_type else None,
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
    with store_errors():
        if keep_latest_versions:
            deleted = await store.delete_older(project, file_key, keep_latest_versions)
        else:
            deleted = await store.delete(project, file_key)
    keys = [i.key for i in deleted]
    message = f"Deleted {', '.join(keys)}." if keys else "Nothing to delete."
    return envelope.success(keys, message=message)
