"""Code archives (zip, tar, .tar.gz) checked and unpacked so that nothing lands outside
the code folder, within bounds of size (issue 26). The lab runs the same checks at deploy
(servicelab.files.LocalFileStore.check_code)."""

from __future__ import annotations

import contextlib
import posixpath
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from .base import ExecuteError
from .sources import escapes


def _inside(relative: str) -> bool:
    return not (relative.startswith("/") or escapes(relative)) and "\\" not in relative


#: How deep symbolic links may point through each other before we call it a loop.
_MAX_LINK_DEPTH = 40
#: What the lab reads of a tarball at deploy (`scan_limit`): the executor reads it all.
_TAR_MEMBER_LIMIT = 200_000


def code_name(key: str) -> str:
    """The file name of a data key, without its version (`models/a.zip.v2` -> `a.zip`)."""
    return re.sub(r"\.v[1-9][0-9]*$", "", key.rsplit("/", 1)[-1])


def archive_kind(name: str, magic: bytes) -> str | None:
    """ "py", "zip" or "tar" for a file that can run as code (by name, else its first
    bytes), None for anything else."""
    if name.endswith(".py"):
        return "py"
    if name.endswith(".zip") or magic.startswith(b"PK\x03\x04"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar")) or magic.startswith(b"\x1f\x8b"):
        return "tar"
    return None


@contextlib.contextmanager
def _damaged(kind: str) -> Iterator[None]:
    """Errors of a damaged or mislabelled archive, as one message instead of a traceback."""
    try:
        yield
    except zipfile.BadZipFile as exc:
        raise ExecuteError(f"It is not a valid zip archive ({exc}).") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, RuntimeError) as exc:
        what = "zip" if kind == "zip" else "tar or .tar.gz"
        raise ExecuteError(f"The archive is damaged or not a {what} archive ({exc}).") from None
    except NotImplementedError as exc:
        raise ExecuteError(f"The archive uses a feature that cannot be unpacked ({exc}).") from None


def _resolve_link_path(
    start: list[str], relative: str, links: dict[str, str], depth: int = 0
) -> list[str] | None:
    """Where `relative`, followed from folder `start` through the archive's own symbolic
    links (`links`: member name -> target), ends up, as parts below the code folder; None
    when it leaves the folder or loops."""
    if depth > _MAX_LINK_DEPTH or relative.startswith("/"):
        return None
    parts = list(start)
    for piece in relative.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(piece)
        target = links.get("/".join(parts))
        if target is not None:
            resolved = _resolve_link_path(parts[:-1], target, links, depth + 1)
            if resolved is None:
                return None
            parts = resolved
    return parts


def _check_names(names: list[str], files: set[str]) -> None:
    """Every member lands inside, and no member's folder is a file of the archive."""
    for name in names:
        if not _inside(name):
            raise ExecuteError(
                f"Refusing archive member {name!r}: it would land outside the code folder."
            )
        parts = posixpath.normpath(name).split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1])
            if folder in files:
                raise ExecuteError(
                    f"Refusing archive member {name!r}: its folder {folder!r} is a file in "
                    "the archive."
                )


def check_zip(zf: zipfile.ZipFile) -> None:
    """Refuse (ExecuteError) a zip whose members could land outside the code folder.
    zipfile writes symbolic links as plain files, so members are files and folders."""
    infos = zf.infolist()
    files = {posixpath.normpath(i.filename) for i in infos if not i.is_dir()}
    _check_names([i.filename for i in infos], files)


def check_tar_members(members: list[tarfile.TarInfo]) -> None:
    """Refuse (ExecuteError) a tarball that could write or point outside the code folder:
    absolute or `..` paths, devices and FIFOs, a path through a symbolic link, links whose
    target (followed through the archive's other links) is outside, hard links to
    anything but a regular file of the archive, a name given twice."""
    links: dict[str, str] = {}
    regular: set[str] = set()
    seen: set[str] = set()
    for member in members:
        normal = posixpath.normpath(member.name)
        if not member.isdir():
            if normal in seen:
                raise ExecuteError(f"Refusing archive member {member.name!r}: it appears twice.")
            seen.add(normal)
        if member.issym():
            links[normal] = member.linkname
        elif member.isfile():
            regular.add(normal)
    # A path through a link is refused below, with its own message.
    _check_names([m.name for m in members], seen - links.keys())
    for member in members:
        name = member.name
        normal = posixpath.normpath(name)

        def refuse(why: str, name: str = name) -> ExecuteError:
            return ExecuteError(f"Refusing archive member {name!r}: {why}.")

        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise refuse("devices, FIFOs and other special files are not allowed")
        parents = normal.split("/")[:-1]
        if any("/".join(parents[: i + 1]) in links for i in range(len(parents))):
            raise refuse("its path goes through a symbolic link")
        if member.issym() and _resolve_link_path(parents, member.linkname, links) is None:
            raise refuse(
                f"its link target {member.linkname!r} points outside the code folder (or in a loop)"
            )
        if member.islnk():
            target = posixpath.normpath(member.linkname)
            if not _inside(member.linkname) or target not in regular:
                raise refuse(f"its hard link target {member.linkname!r} is not a file in it")


def scan_archive(path: Path, kind: str, scan_limit: int | None = None) -> None:
    """Check an archive without unpacking it (ExecuteError says what is wrong). For a
    tarball, reading stops after `scan_limit` bytes of members: the rest is checked when
    it is unpacked."""
    with _damaged(kind):
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                check_zip(zf)
            return
        members: list[tarfile.TarInfo] = []
        seen = 0
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                seen += member.size + tarfile.BLOCKSIZE
                if (scan_limit is not None and seen > scan_limit) or len(
                    members
                ) >= _TAR_MEMBER_LIMIT:
                    break
                members.append(member)
        check_tar_members(members)


# Bounds of archives (issue 26): a 1 MB zip can unpack to 1 GiB of spaces. The same rule
# and values as servicelab/models/server/detect.py (`check_unpacked`), which the lab applies
# at upload; the executor applies it again to whatever it is given, before it unpacks.
#: Most members an archive may have.
MAX_MEMBERS = 50_000
#: Most bytes an archive may unpack to, however large it is itself.
MAX_UNPACKED_BYTES = 32 * 1024**3
#: Past RATIO_FLOOR, an archive may unpack to at most MAX_RATIO times its own size.
MAX_RATIO = 100
RATIO_FLOOR = 256 * 1024**2


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def check_unpacked(kind: str, members: int, total: int, packed: int) -> None:
    """Refuse (ExecuteError, one line naming the bound) an archive of `packed` bytes with
    more than MAX_MEMBERS members or that unpacks to `total` bytes past the bounds."""
    if members > MAX_MEMBERS:
        raise ExecuteError(
            f"this {kind} has more than {MAX_MEMBERS} members: servicelab refuses larger "
            "lists of members. Put fewer files in it."
        )
    if total > MAX_UNPACKED_BYTES or (total > RATIO_FLOOR and total > MAX_RATIO * packed):
        raise ExecuteError(
            f"this {kind} of {_size(packed)} unpacks to {_size(total)} or more: servicelab "
            f"refuses archives that unpack to more than {_size(MAX_UNPACKED_BYTES)}, or, past "
            f"{_size(RATIO_FLOOR)}, to more than {MAX_RATIO} times their own size (a zip "
            "bomb). If it really is this large, store it without compression."
        )


def unpack_zip(archive: Path, dest: Path) -> None:
    """Extract a zip after its bounds and `check_zip` found nothing to refuse. zipfile never
    unpacks a member past the size its list gives it, so checking those sizes suffices."""
    with _damaged("zip"), zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        check_unpacked("zip", len(infos), sum(i.file_size for i in infos), archive.stat().st_size)
        check_zip(zf)
        zf.extractall(dest)


def unpack_tar(archive: Path, dest: Path) -> None:
    """Extract a tarball after `check_tar_members` found nothing to refuse."""
    with _damaged("tar"), tarfile.open(archive) as tf:
        # Listed one header at a time, refused as soon as they pass the bounds.
        members: list[tarfile.TarInfo] = []
        total, packed = 0, archive.stat().st_size
        while (member := tf.next()) is not None:
            members.append(member)
            total += member.size
            check_unpacked("tar", len(members), total, packed)
        check_tar_members(members)
        for member in members:
            member.mode &= 0o755  # no setuid/setgid bits, nothing writable by others
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: a second line of defence
            tf.extractall(dest, members, filter="data")
        else:
            tf.extractall(dest, members)
