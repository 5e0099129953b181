"""Where a code service's local folder goes in a container.

`EXECUTE_CODE` may name a folder (or a `.py` file) on the lab's machine. Inside a
container that path means nothing, so the Docker runtime bind-mounts the folder
read-only at `/workspace/code` and hands the executor the path there. VCS URLs and data
keys need no mount: the executor in the runtime image fetches them itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from servicelab.runtimes.base import SpecError
from servicelab.spec import CODE_SERVICE_PORT

#: Where the folder is mounted; the runtime image's working directory is /workspace.
CODE_MOUNT = "/workspace/code"

VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
#: Keys in the project's data (`<type>/<name>`, see servicelab.files).
DATA_KEY = re.compile(r"^(datasets|models|experiments|backups)/[^/]")


@dataclass(frozen=True)
class CodeMount:
    #: The folder on the engine's host, mounted read-only at CODE_MOUNT.
    source: str
    #: EXECUTE_CODE inside the container: CODE_MOUNT, or the .py file in it.
    execute_code: str


def code_mount(code: str) -> CodeMount | None:
    """The mount a local-path code source needs, or None for VCS URLs and data keys.

    Raises SpecError, saying what to give instead, for a path that does not exist or is
    not a folder with `__main__.py` or a `.py` file. A `.py` file's whole folder is
    mounted, so that a `requirements.txt` beside it is installed as ML Lab did.
    """
    code = code.strip()
    if code.startswith(VCS_PREFIXES) or DATA_KEY.match(code):
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
        return CodeMount(str(path), CODE_MOUNT)
    if path.suffix != ".py":
        raise SpecError(f"Cannot run {code!r}: give a folder with __main__.py or a .py file.")
    return CodeMount(str(path.parent), f"{CODE_MOUNT}/{path.name}")
