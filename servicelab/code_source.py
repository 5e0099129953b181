"""What kind of EXECUTE_CODE source a string is, and the checks every runtime shares.

A source is a pip-style VCS URL, the key of a file in the project's data, or a local path
(a folder with `__main__.py`, or a `.py` file). Runtimes check a local path before they
start anything, so that a typo is a clear 4xx rather than a crash loop.
"""

from __future__ import annotations

import re
from pathlib import Path

from servicelab.execute import ExecuteError, parse_vcs_url
from servicelab.runtimes.base import SpecError
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
