"""The store's errors: each one a message for users, mapped to one HTTP status by
servicelab.errors (the API and the UI alike)."""

from __future__ import annotations


class FileStoreError(Exception):
    """Base of the store's errors; `str()` is a message for users."""


class InvalidKey(FileStoreError, ValueError):
    """A malformed key, file name, data type or project name (the API answers 400)."""


class FileNotFound(FileStoreError, LookupError):
    """No such file or version (404)."""


class InvalidRange(FileStoreError, ValueError):
    """A byte range outside the file (416)."""


class FileTooLarge(FileStoreError, ValueError):
    """An upload larger than the store's limit (413)."""


class QuotaExceeded(FileStoreError, ValueError):
    """An upload that would take the project past its storage quota (413)."""


class NotRunnable(FileStoreError, ValueError):
    """A file given as a code service's source that cannot run: not .py, .zip or
    .tar.gz, or an archive the executor would refuse (400)."""
