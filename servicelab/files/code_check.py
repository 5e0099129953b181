"""The executor's checks of a code archive, made by the lab before it deploys a data key
as a code service: a file that could not run answers 400 now, not a failed service later."""

from __future__ import annotations

from pathlib import Path

from servicelab import execute

# The model server applies the same bounds before it unpacks: one rule, its module.
from servicelab.models.server.detect import ArchiveTooLarge, check_archive

from .errors import NotRunnable

#: Bytes of a tarball's members the lab reads to check it at deploy (gzip may hide a
#: lot in a small upload); the executor checks the rest before unpacking.
CODE_SCAN_LIMIT = 1024**3


def check_code_file(key: str, path: Path) -> None:
    """The executor's checks of a code archive, made by the lab before it deploys it."""
    with open(path, "rb") as handle:
        kind = execute.archive_kind(execute.code_name(key), handle.read(4))
    if kind is None:
        raise NotRunnable(
            f"{key} cannot run as code: use a .py file, or a .zip or .tar.gz with a __main__.py."
        )
    if kind != "py":
        try:
            # The bounds first (members, bytes, ratio): listing a bomb's members costs the
            # lab memory, and the executor would unpack it onto the service's disk.
            check_archive(path)
            execute.scan_archive(path, kind, scan_limit=CODE_SCAN_LIMIT)
        except (ArchiveTooLarge, execute.ExecuteError) as exc:
            raise NotRunnable(f"{key} cannot run as code: {exc}") from None
