"""The store contract: what the API, the deploy pipeline and the models need of a
project data store, whichever backend keeps the bytes.

A backend subclasses `FileStore` and is declared in the entry-point group
`servicelab.file_stores` (servicelab's own: `local`); `open_file_store` builds the one
SERVICELAB_FILE_STORE names, as JupyterHub builds its configured spawner.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servicelab.config import Settings


@dataclass(frozen=True)
class FileInfo:
    key: str
    name: str
    data_type: str
    version: int
    size: int
    sha256: str
    created: datetime
    uploader: str | None = None
    #: User metadata given at upload (ML Lab's `x-amz-meta-*` headers), str -> str.
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = self.created.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileInfo:
        data = dict(data)
        data["created"] = datetime.fromisoformat(data["created"])
        data["metadata"] = dict(data.get("metadata") or {})
        return cls(**data)


class FileStore(abc.ABC):
    """Versioned files per project. All methods validate their inputs (InvalidKey)."""

    @abc.abstractmethod
    async def put(
        self,
        project: str,
        data_type: str,
        file_name: str,
        chunks: AsyncIterator[bytes],
        uploader: str | None = None,
        *,
        versioning: bool = True,
        max_size: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> FileInfo:
        """Store a new version from `chunks`, in constant memory.

        Concurrent uploads of one name each get their own version. With
        `versioning=False` the older versions are removed once the new one is stored.
        """

    @abc.abstractmethod
    async def info(self, project: str, key: str) -> FileInfo:
        """The version `key` names (the latest if it has no version)."""

    @abc.abstractmethod
    async def open_range(
        self, project: str, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes `start` up to `end` (exclusive; None: to the end) of a version.

        Awaiting this resolves the key and checks the range (FileNotFound, InvalidRange)
        before any byte is sent, so an HTTP handler can still choose its status code.
        """

    @abc.abstractmethod
    async def list(
        self,
        project: str,
        prefix: str | None = None,
        data_type: str | None = None,
        *,
        all_versions: bool = False,
    ) -> builtins.list[FileInfo]:
        """Files whose key (`<type>/<name>`) starts with `prefix`, sorted by key.

        Only the latest version of each name unless `all_versions`.
        """

    @abc.abstractmethod
    async def delete(self, project: str, key: str) -> builtins.list[FileInfo]:
        """Delete one version (a versioned key) or every version of a name; returns what
        was deleted."""

    @abc.abstractmethod
    async def delete_older(self, project: str, key: str, keep: int) -> builtins.list[FileInfo]:
        """Delete every version of the key's name but the newest `keep` (ML Lab's
        `keepLatestVersions`; a version in the key is ignored); returns what was deleted."""

    @abc.abstractmethod
    async def delete_project(self, project: str) -> None:
        """Remove all files of a project; a project without files is not an error."""

    @abc.abstractmethod
    async def usage(self, project: str) -> int:
        """Bytes the project's files take, every version counted."""

    @abc.abstractmethod
    async def check_code(self, project: str, key: str) -> None:
        """Raise NotRunnable (or FileNotFound) unless the executor could run `key`."""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings) -> FileStore:
        """The store the lab's settings describe (the local one lives under the data
        folder); called once, by `open_file_store`."""

    def remove_stale_temp_files(self) -> int:
        """Remove what uploads that died with their lab left behind, before anyone
        writes; returns how many went. A store that keeps no temporary files has none."""
        return 0
