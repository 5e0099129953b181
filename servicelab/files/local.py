"""The local backend (entry point `local`): each version a plain file with a JSON sidecar.

    <root>/<project>/<data type>/<name>.v<N>            the bytes
    <root>/<project>/<data type>/<name>.v<N>.meta.json  FileInfo, written atomically

A version becomes visible when its sidecar appears (the sidecar is renamed into place
after the bytes are), so readers never see a half-written file and the store needs no
database.

Bytes and sidecars are written to `.tmp-<random>` files first, each held under an
exclusive `flock` while it is written: a lab killed mid-upload leaves its temporary file
unlocked, and `remove_stale_temp_files` (run at start) removes exactly those, never one
that another lab process sharing the folder is still writing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .code_check import check_code_file
from .errors import FileNotFound, FileTooLarge, InvalidKey, InvalidRange
from .keys import (
    DATA_TYPES,
    META_SUFFIX,
    FileKey,
    parse_key,
    validate_data_type,
    validate_name,
    validate_project,
)
from .store import FileInfo, FileStore

if TYPE_CHECKING:
    from servicelab.config import Settings

CHUNK_SIZE = 1024 * 1024
_TMP_PREFIX = ".tmp-"


class LocalFileStore(FileStore):
    """Versions as plain files under `root` (the lab uses `<data dir>/files`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # paths

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalFileStore:
        return cls(settings.data_dir / "files")

    def _project_dir(self, project: str) -> Path:
        return self.root / validate_project(project)

    def _name_path(self, project: str, data_type: str, name: str) -> Path:
        """Where the versions of a name live, without the `.v<N>` suffix."""
        return self._project_dir(project) / data_type / name

    @staticmethod
    def _version_path(base: Path, version: int) -> Path:
        return base.with_name(f"{base.name}.v{version}")

    @staticmethod
    def _meta_path(data_path: Path) -> Path:
        return data_path.with_name(data_path.name + META_SUFFIX)

    # writing

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
        validate_data_type(data_type)
        validate_name(file_name)
        base = self._name_path(project, data_type, file_name)
        await asyncio.to_thread(base.parent.mkdir, parents=True, exist_ok=True)
        tmp = base.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(_open_locked_temp, tmp)
        try:
            try:
                # Network chunks are small; gather ~1 MiB before each trip to a thread.
                buffer: list[bytes] = []
                buffered = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise FileTooLarge(
                            f"The file is larger than the limit of {max_size} bytes."
                        )
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= CHUNK_SIZE:
                        await asyncio.to_thread(_write_chunks, handle, digest, buffer)
                        buffer, buffered = [], 0
                if buffer:
                    await asyncio.to_thread(_write_chunks, handle, digest, buffer)
                await asyncio.to_thread(_flush_and_sync, handle)
                # Claimed while still locked, so no start-up clean-up can take it first.
                info = await asyncio.to_thread(
                    self._claim_version,
                    base,
                    tmp,
                    data_type,
                    file_name,
                    size,
                    digest.hexdigest(),
                    uploader,
                    dict(metadata or {}),
                    content_type,
                )
            finally:
                await asyncio.to_thread(handle.close)
        finally:
            await asyncio.to_thread(_unlink_quietly, tmp)
        if not versioning:
            for old in await self._versions(project, data_type, file_name):
                if old.version < info.version:
                    await asyncio.to_thread(self._remove_version, base, old.version)
        return info

    def _claim_version(
        self,
        base: Path,
        tmp: Path,
        data_type: str,
        name: str,
        size: int,
        sha256: str,
        uploader: str | None,
        metadata: dict[str, str],
        content_type: str | None,
    ) -> FileInfo:
        """Link the finished temp file to the next free `.v<N>`; a link fails if the name
        exists, so two uploads racing for N both survive: the loser takes N+1."""
        version = max(_data_versions(base), default=0) + 1
        while True:
            target = self._version_path(base, version)
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                version += 1
        info = FileInfo(
            key=str(FileKey(data_type, name, version)),
            name=name,
            data_type=data_type,
            version=version,
            size=size,
            sha256=sha256,
            created=datetime.now(UTC),
            uploader=uploader,
            metadata=metadata,
            content_type=content_type,
        )
        _atomic_write_json(self._meta_path(target), info.to_dict())
        _fsync_dir(base.parent)
        return info

    def _remove_version(self, base: Path, version: int) -> None:
        # The sidecar first: the version disappears for readers in one step.
        data = self._version_path(base, version)
        _unlink_quietly(self._meta_path(data))
        _unlink_quietly(data)

    # reading

    async def _versions(self, project: str, data_type: str, name: str) -> builtins.list[FileInfo]:
        base = self._name_path(project, data_type, name)
        return await asyncio.to_thread(self._read_versions, base)

    def _read_versions(self, base: Path) -> builtins.list[FileInfo]:
        infos = []
        for version in sorted(_data_versions(base)):
            info = _read_meta(self._meta_path(self._version_path(base, version)))
            if info is not None:
                infos.append(info)
        return infos

    async def _resolve(self, project: str, key: str) -> tuple[FileInfo, Path]:
        parsed = parse_key(key)
        base = self._name_path(project, parsed.data_type, parsed.name)
        if parsed.version is not None:
            path = self._version_path(base, parsed.version)
            info = await asyncio.to_thread(_read_meta, self._meta_path(path))
        else:
            versions = await asyncio.to_thread(self._read_versions, base)
            info = versions[-1] if versions else None
            path = self._version_path(base, info.version) if info else base
        if info is None:
            raise FileNotFound(f"No file {key!r} in project {project!r}.")
        return info, path

    async def info(self, project: str, key: str) -> FileInfo:
        info, _ = await self._resolve(project, key)
        return info

    async def open_range(
        self, project: str, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        info, path = await self._resolve(project, key)
        end = info.size if end is None else min(end, info.size)
        if start < 0 or start > end or (start == end and info.size > 0 and start >= info.size):
            raise InvalidRange(f"Range {start}-{end} is outside {info.key} ({info.size} bytes).")
        try:
            # Opened now: a delete after this point cannot break the stream (POSIX unlink).
            handle = await asyncio.to_thread(_open_binary, path, "rb")
        except FileNotFoundError:
            raise FileNotFound(f"No file {key!r} in project {project!r}.") from None
        return _read_range(handle, start, end)

    async def list(
        self,
        project: str,
        prefix: str | None = None,
        data_type: str | None = None,
        *,
        all_versions: bool = False,
    ) -> builtins.list[FileInfo]:
        if data_type is not None:
            validate_data_type(data_type)
        if prefix is not None and ("\x00" in prefix or "\\" in prefix):
            raise InvalidKey(f"Invalid prefix {prefix!r}: backslashes and NUL are not allowed.")
        types = [data_type] if data_type else list(DATA_TYPES)
        if prefix:
            # Only walk the data types the prefix can match.
            types = [t for t in types if f"{t}/".startswith(prefix) or prefix.startswith(f"{t}/")]
        project_dir = self._project_dir(project)
        infos = await asyncio.to_thread(_scan, project_dir, types)
        if prefix:
            infos = [i for i in infos if f"{i.data_type}/{i.name}".startswith(prefix)]
        if not all_versions:
            latest: dict[tuple[str, str], FileInfo] = {}
            for info in infos:
                current = latest.get((info.data_type, info.name))
                if current is None or info.version > current.version:
                    latest[(info.data_type, info.name)] = info
            infos = list(latest.values())
        return sorted(infos, key=lambda i: (i.data_type, i.name, i.version))

    # deleting

    async def delete(self, project: str, key: str) -> builtins.list[FileInfo]:
        parsed = parse_key(key)
        base = self._name_path(project, parsed.data_type, parsed.name)
        if parsed.version is not None:
            info, _ = await self._resolve(project, key)
            doomed = [info]
        else:
            doomed = await asyncio.to_thread(self._read_versions, base)
            if not doomed:
                raise FileNotFound(f"No file {key!r} in project {project!r}.")
        for info in doomed:
            await asyncio.to_thread(self._remove_version, base, info.version)
        if parsed.version is None:
            # Also versions whose upload never finished (bytes without sidecar).
            for version in await asyncio.to_thread(_data_versions, base):
                await asyncio.to_thread(self._remove_version, base, version)
        return doomed

    async def delete_older(self, project: str, key: str, keep: int) -> builtins.list[FileInfo]:
        if keep < 0:
            raise InvalidKey(f"keepLatestVersions={keep}: give 0 or more.")
        parsed = parse_key(key)
        base = self._name_path(project, parsed.data_type, parsed.name)
        versions = await asyncio.to_thread(self._read_versions, base)
        if not versions:
            raise FileNotFound(f"No file {key!r} in project {project!r}.")
        # Only finished versions count and go: an upload still under way has claimed a
        # higher number than any of them and is left alone.
        doomed = versions[: max(0, len(versions) - keep)]
        for info in doomed:
            await asyncio.to_thread(self._remove_version, base, info.version)
        return doomed

    async def delete_project(self, project: str) -> None:
        project_dir = self._project_dir(project)
        await asyncio.to_thread(shutil.rmtree, project_dir, ignore_errors=True)

    async def usage(self, project: str) -> int:
        infos = await asyncio.to_thread(_scan, self._project_dir(project), list(DATA_TYPES))
        return sum(info.size for info in infos)

    async def check_code(self, project: str, key: str) -> None:
        _, path = await self._resolve(project, key)
        await asyncio.to_thread(check_code_file, key, path)

    def remove_stale_temp_files(self) -> int:
        """Remove the temporary files of uploads that died with their lab (unlocked
        `.tmp-*`); returns how many went."""
        removed = 0
        for folder, _dirs, files in os.walk(self.root):
            for entry in files:
                if entry.startswith(_TMP_PREFIX) and _remove_if_unlocked(Path(folder) / entry):
                    removed += 1
        return removed


# --- blocking helpers (run in threads) ------------------------------------------------


def _open_binary(path: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, open(path, mode))  # noqa: SIM115 - closed by the caller


def _open_locked_temp(path: Path) -> BinaryIO:
    """A new temporary file, locked for as long as it is open (see the module's doc)."""
    handle = _open_binary(path, "xb")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live upload's
    else:
        _unlink_quietly(path)
        return True
    finally:
        os.close(fd)


def _write_chunks(handle: BinaryIO, digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        handle.write(chunk)
        digest.update(chunk)


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with _open_locked_temp(tmp) as handle:
            handle.write(json.dumps(data).encode())
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        _unlink_quietly(tmp)


def _read_meta(path: Path) -> FileInfo | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return FileInfo.from_dict(json.load(handle))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _data_versions(base: Path) -> list[int]:
    """Version numbers that have bytes on disk, finished or not."""
    prefix = base.name + ".v"
    try:
        entries = os.listdir(base.parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    versions = []
    for entry in entries:
        if entry.startswith(prefix) and not entry.endswith(META_SUFFIX):
            number = entry[len(prefix) :]
            if number.isdigit() and not number.startswith("0"):
                versions.append(int(number))
    return versions


def _scan(project_dir: Path, types: list[str]) -> list[FileInfo]:
    """Every finished version under the given data types (read from sidecars)."""
    infos = []
    for data_type in types:
        top = project_dir / data_type
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for entry in files:
                if entry.endswith(META_SUFFIX) and not entry.startswith("."):
                    info = _read_meta(Path(folder) / entry)
                    if info is not None:
                        infos.append(info)
    return infos


async def _read_range(handle: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(handle.seek, start)
        remaining = end - start
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)
