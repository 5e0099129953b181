"""What kind of EXECUTE_CODE source a string is, and the checks every runtime shares.

A source is a pip-style VCS URL, the key of a file in the project's data, or a local path
(a folder with `__main__.py`, or a `.py` file). Runtimes check a local path before they
start anything, so that a typo is a clear 4xx rather than a crash loop.

A local path is a path on the lab's machine, so who may name one is a rule of its own
(`check_code_roots`): members only below the folders of `SERVICELAB_CODE_ROOTS`, admins
anywhere. A path is resolved once, when the service is deployed; runtimes then open that
resolved folder (`open_code_folder`) and refuse it if it is no longer the same path, so
that a symbolic link swapped in later cannot redirect a service to another folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from servicelab.execute import ExecuteError, parse_vcs_url
from servicelab.runtime_errors import SpecError
from servicelab.spec import CODE_SERVICE_PORT

#: pip-style VCS URLs; the executor checks them out.
VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
#: Keys in the project's data (`<type>/<name>`, see servicelab.files); the executor fetches them.
DATA_KEY = re.compile(r"^(datasets|models|experiments|backups)/[^/]")


def is_remote(code: str) -> bool:
    """A VCS URL or a data key: fetched by the executor, nothing to check here."""
    code = code.strip()
    return code.startswith(VCS_PREFIXES) or bool(DATA_KEY.match(code))


def check_vcs_url(code: str) -> None:
    """The executor's own checks of a VCS URL (syntax, nothing that a VCS tool could read
    as an option), made at deploy so that a bad URL is a 400 and not a crash loop."""
    try:
        parse_vcs_url(code)
    except ExecuteError as exc:
        raise SpecError(str(exc)) from None


def local_code_path(code: str) -> Path | None:
    """The absolute path of a local-path source, or None for VCS URLs and data keys.

    Raises SpecError, saying what to give instead, for anything else or a path that is not
    a folder with `__main__.py` or a `.py` file.
    """
    code = code.strip()
    if is_remote(code):
        if code.startswith(VCS_PREFIXES):
            check_vcs_url(code)
        return None
    if "://" in code and not code.startswith("file://"):
        raise SpecError(
            f"Cannot run code from {code!r}: use a local path, a pip-style VCS URL "
            "(git+https://..., hg+, svn+, bzr+) or a data key such as 'models/my-service.zip'."
        )
    path = Path(code.removeprefix("file://")).expanduser().resolve()
    if not path.exists():
        raise SpecError(
            f"Code path {code!r} does not exist on the lab's machine: give an existing folder "
            "with __main__.py or a .py file (or a VCS URL or a data key)."
        )
    if path.is_dir():
        if not (path / "__main__.py").is_file():
            raise SpecError(
                f"The folder {code!r} has no __main__.py: add one that starts your server on "
                f"$PORT (default {CODE_SERVICE_PORT})."
            )
    elif path.suffix != ".py":
        raise SpecError(f"Cannot run {code!r}: give a folder with __main__.py or a .py file.")
    return path


class CodePathRefused(SpecError):
    """A local path outside the allowed code roots (the API answers 400)."""


def check_code_roots(code: str, roots: Sequence[Path]) -> None:
    """Refuse a local-path source that is not below one of `roots`.

    For members: admins may name any path. The decision uses the path as resolved on the
    lab's machine but never whether it exists, and the message is the same either way, so
    that a refusal tells nothing about the lab's file system.
    """
    text = code.strip()
    if is_remote(text):
        return
    raw = text.removeprefix("file://")
    absolute = raw.startswith(("/", "~"))  # a relative path would depend on the lab's cwd
    resolved = Path(os.path.realpath(Path(raw).expanduser())) if absolute else None
    if resolved is not None and any(_below(resolved, root) for root in roots):
        return
    where = (
        "the folders of SERVICELAB_CODE_ROOTS (" + ", ".join(str(r) for r in roots) + ")"
        if roots
        else "no folder: this lab allows host paths to admins only (SERVICELAB_CODE_ROOTS)"
    )
    raise CodePathRefused(
        f"Code path {code!r} is refused: members may run code from {where}. "
        "Use a VCS URL (git+https://...) or a data key such as 'models/my-service.zip' "
        "instead, or ask an admin."
    )


def _below(path: Path, root: Path) -> bool:
    root = Path(os.path.realpath(root))
    return path == root or root in path.parents


@dataclass(frozen=True)
class CodeFolder:
    """A local code source opened once: the folder (an O_PATH descriptor, which the
    caller closes) and the file to run in it (None: the folder's `__main__.py`)."""

    fd: int
    path: Path
    main: str | None


def open_code_folder(path: Path) -> CodeFolder:
    """Open the folder of a resolved local source and check that it still is `path`.

    `path` was resolved (no symbolic links) when the service was deployed. Whatever the
    descriptor opened is what a runtime then mounts or copies, and /proc tells its real
    path: if a link was swapped into `path` since, that path differs and the start is
    refused instead of following the link.
    """
    folder, main = (path, None) if path.suffix != ".py" else (path.parent, path.name)
    try:
        fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SpecError(f"Cannot open the code folder {str(folder)!r}: {exc.strerror}.") from None
    real = os.readlink(f"/proc/self/fd/{fd}")
    main_ok = main is None or (
        os.path.isfile(f"/proc/self/fd/{fd}/{main}")
        and not os.path.islink(f"/proc/self/fd/{fd}/{main}")
    )
    if real != str(folder) or not main_ok:
        os.close(fd)
        raise SpecError(
            f"The code path {str(path)!r} is no longer the folder that was deployed (a "
            "symbolic link was put in its place?): deploy the service again."
        )
    return CodeFolder(fd, folder, main)
