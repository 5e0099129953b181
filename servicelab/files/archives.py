"""Bounds of archives (issue 26), checked before any member is read: a 1 MB zip can
unpack to 1 GiB of spaces, and a 500 kB tar.gz can list 100 000 members.

The lab's copy of the rule. The model server applies the same one again before it
unpacks, from servicelab/models/server/detect.py: its folder runs alone as a code service,
without servicelab, so it cannot import this module (nor this one import it: the models
depend on the files, not the other way round); tests/test_files_archives.py keeps the two
in step, as tests/test_models_formats.py does with the executor's.
"""

from __future__ import annotations

import lzma
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO

#: Most members an archive may have: listing one costs about 500 bytes of memory.
MAX_MEMBERS = 50_000
#: Most bytes a zip's list of members (its central directory) may take.
MAX_ZIP_DIRECTORY = 16 * 1024 * 1024
#: Most bytes an archive may unpack to, however large it is itself.
MAX_UNPACKED_BYTES = 32 * 1024**3
#: Past RATIO_FLOOR, an archive may unpack to at most MAX_RATIO times its own size: models
#: and code compress 1 to 10 times, a zip bomb a thousand times.
MAX_RATIO = 100
RATIO_FLOOR = 256 * 1024**2


class ArchiveTooLarge(ValueError):
    """An archive past the bounds; `str()` says which, for users."""


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error):
        return False


def check_archive(path: Path) -> None:
    """Raise ArchiveTooLarge for a zip or tarball past the bounds, without unpacking it.
    Anything else passes, a damaged archive too: whoever reads it says what is wrong."""
    try:
        if zipfile.is_zipfile(path):
            with open_zip(path):
                return
        if _is_tar(path):
            with tarfile.open(path) as tar:
                tar_members(tar, path.stat().st_size)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, lzma.LZMAError, zlib.error):
        return


def open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at `path`, opened once its list of members is known to be within the
    bounds (zipfile reads the whole list first), and what it unpacks to too. A member
    never unpacks to more than the size the list gives it: zipfile stops there."""
    with open(path, "rb") as handle:
        directory = _zip_directory(handle)
        if directory is not None:
            start, size = directory
            if size > MAX_ZIP_DIRECTORY:
                raise ArchiveTooLarge(
                    f"This zip's list of members takes {_size(size)}: servicelab reads at "
                    f"most {_size(MAX_ZIP_DIRECTORY)} of it. Put fewer files in it."
                )
            check_unpacked("zip", _count_zip_members(handle, start, size), 0, 1)
    archive = zipfile.ZipFile(path)
    try:
        infos = archive.infolist()
        total = sum(i.file_size for i in infos)
        check_unpacked("zip", len(infos), total, path.stat().st_size)
    except BaseException:
        archive.close()
        raise
    return archive


def tar_members(tar: tarfile.TarFile, packed: int) -> list[tarfile.TarInfo]:
    """A tarball's members, listed one header at a time and refused (ArchiveTooLarge) as
    soon as they pass the bounds, before the data of the member past them is read."""
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        total += member.size
        check_unpacked("tar", len(members), total, packed)
    return members


def check_unpacked(kind: str, members: int, total: int, packed: int) -> None:
    """Raise ArchiveTooLarge when an archive of `packed` bytes has more than MAX_MEMBERS
    members or unpacks to `total` bytes past MAX_UNPACKED_BYTES or MAX_RATIO."""
    if members > MAX_MEMBERS:
        raise ArchiveTooLarge(
            f"This {kind} has more than {MAX_MEMBERS} members: servicelab refuses larger "
            "lists of members (each one costs the lab memory). Put fewer files in it."
        )
    if total > MAX_UNPACKED_BYTES or (total > RATIO_FLOOR and total > MAX_RATIO * packed):
        raise ArchiveTooLarge(
            f"This {kind} of {_size(packed)} unpacks to {_size(total)} or more: servicelab "
            f"refuses archives that unpack to more than {_size(MAX_UNPACKED_BYTES)}, or, past "
            f"{_size(RATIO_FLOOR)}, to more than {MAX_RATIO} times their own size (a zip "
            "bomb). If it really is this large, store it without compression (zip -0, or a "
            ".tar without gzip)."
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


# zipfile's records: the end of central directory (EOCD), ZIP64's locator and EOCD, and
# one entry of the central directory (46 bytes, then its name, extra field and comment).
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ENTRY_SIZE = 46


def _zip_directory(handle: IO[bytes]) -> tuple[int, int] | None:
    """Where a zip's central directory starts and how many bytes it has, found as zipfile
    finds it (the last end record, ZIP64's when present); None when there is none."""
    size = handle.seek(0, os.SEEK_END)
    start = max(0, size - _EOCD.size - 0xFFFF)
    handle.seek(start)
    tail = handle.read()
    at = len(tail) - _EOCD.size
    if tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\x00\x00":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    end = start + at
    directory_size, directory_offset = _EOCD.unpack_from(tail, at)[5:7]
    if end >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
        handle.seek(end - _ZIP64_LOCATOR.size)
        if handle.read(4) == b"PK\x06\x07":
            handle.seek(end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size)
            record = handle.read(_ZIP64_EOCD.size)
            if record[:4] == b"PK\x06\x06":
                directory_size = _ZIP64_EOCD.unpack(record)[8]
                end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
    return max(0, end - directory_size), directory_size


def _count_zip_members(handle: IO[bytes], start: int, size: int) -> int:
    """The entries of a central directory, walked without keeping any (stops one past
    MAX_MEMBERS, or where the directory is damaged: zipfile then says so)."""
    handle.seek(start)
    count = position = 0
    while position < size and count <= MAX_MEMBERS:
        header = handle.read(_ENTRY_SIZE)
        if len(header) < _ENTRY_SIZE or header[:4] != b"PK\x01\x02":
            break
        skip = sum(struct.unpack_from("<3H", header, 28))
        handle.seek(skip, os.SEEK_CUR)
        position += _ENTRY_SIZE + skip
        count += 1
    return count
