"""The project data store: versioned files under keys like ML Lab's `models/net.pt.v3`.

One job per module: `keys` (the key format and DATA_TYPES, defined once), `store` (the
`FileStore` contract the API, the deploy pipeline and the models use), `local` (the
backend that keeps versions as plain files), `code_check` (whether a file could run as a
code service; the bounds of archives are the model server's, `models/server/detect.py`),
and `errors`.

The backend is found by the entry-point group `servicelab.file_stores` and chosen by
SERVICELAB_FILE_STORE (default `local`): another store (S3...) is a package that declares
a `FileStore` subclass there, with nothing of servicelab edited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    FileNotFound,
    FileStoreError,
    FileTooLarge,
    InvalidKey,
    InvalidRange,
    NotRunnable,
    QuotaExceeded,
)
from .keys import (
    DATA_TYPES,
    MAX_KEY_LENGTH,
    MAX_PART_LENGTH,
    FileKey,
    parse_key,
    validate_data_type,
    validate_name,
    validate_project,
)
from .local import CHUNK_SIZE, LocalFileStore
from .store import FileInfo, FileStore

if TYPE_CHECKING:
    from servicelab.config import Settings

__all__ = [
    "CHUNK_SIZE",
    "DATA_TYPES",
    "MAX_KEY_LENGTH",
    "MAX_PART_LENGTH",
    "FileInfo",
    "FileKey",
    "FileNotFound",
    "FileStore",
    "FileStoreError",
    "FileTooLarge",
    "InvalidKey",
    "InvalidRange",
    "LocalFileStore",
    "NotRunnable",
    "QuotaExceeded",
    "open_file_store",
    "parse_key",
    "validate_data_type",
    "validate_name",
    "validate_project",
]


def open_file_store(settings: Settings) -> FileStore:
    """The store SERVICELAB_FILE_STORE names, found by its entry point and built from the
    settings; what an interrupted upload left behind is removed before anyone writes."""
    from servicelab.registry import FILE_STORES

    # mypy wants a concrete class for type[T]; the registry checks the subclass itself.
    backend = FILE_STORES.load(settings.file_store, FileStore)  # type: ignore[type-abstract]
    store = backend.from_settings(settings)
    store.remove_stale_temp_files()
    return store
