"""A local path as code to run, and the folders the executor owns."""

from __future__ import annotations

import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from .base import ExecuteError


@dataclass
class Code:
    """What to run: `main` (a `.py` file or a folder), and the folder with its deps."""

    folder: Path
    main: Path


def code_from_path(path: Path, what: str = "") -> Code:
    where = f" {what}" if what else ""
    if path.is_file():
        if path.suffix != ".py":
            raise ExecuteError(f"{path}{where} is not a Python file (.py) or a folder.")
        return Code(path.parent.resolve(), path.resolve())
    if path.is_dir():
        if not (path / "__main__.py").is_file():
            raise ExecuteError(
                f"The folder {path}{where} has no __main__.py: add one that starts your "
                "service (it runs as 'python <folder>')."
            )
        return Code(path.resolve(), path.resolve())
    raise ExecuteError(f"{path}{where} does not exist.")


def escapes(relative: str) -> bool:
    """Whether a relative path (a subdirectory, an archive member) leaves its folder."""
    normal = posixpath.normpath(relative)
    return relative.startswith("/") or normal == ".." or normal.startswith("../")


def fresh(folder: Path) -> Path:
    """An empty folder (the executor owns it: what was there from an earlier run goes)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder
