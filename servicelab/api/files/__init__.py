"""Project data on ML Lab's `/api/projects/{project}/files` paths, one router per job:
`upload` (with `multipart`, the streaming parser), `download`, `listing` (a file's
metadata, the project's files, deleting them); `common` holds what they share. The
deploy-time check of a data key given as a code source is the deploy pipeline's.

Uploads are parsed as they arrive and downloads are streamed from the store, so neither
holds a file in memory.

The app wires this with `install(app)`: the routes use the lab's store
(`Lab.files`), and a project's files go when the project is deleted.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from . import download, listing, upload
from .common import PREFIX, file_out, file_project, file_store
from .download import parse_range
from .multipart import UploadError
from .upload import MAX_METADATA_BYTES, METADATA_PREFIX, upload_metadata

__all__ = [
    "MAX_METADATA_BYTES",
    "METADATA_PREFIX",
    "PREFIX",
    "ROUTERS",
    "UploadError",
    "file_out",
    "file_project",
    "file_store",
    "install",
    "parse_range",
    "upload_metadata",
]

#: Every files router, in the order the API documents them.
ROUTERS: tuple[APIRouter, ...] = (upload.router, download.router, listing.router)


def install(app: FastAPI) -> None:
    """Add the file routes to the lab's FastAPI app. They use the lab's store
    (`Lab.files`, built with the lab by `servicelab.app.build_lab`)."""
    for router in ROUTERS:
        app.include_router(router)
