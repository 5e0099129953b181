"""Where a code service's local folder goes in a container.

`EXECUTE_CODE` may name a folder (or a `.py` file) on the lab's machine. Inside a
container that path means nothing, so the Docker runtime bind-mounts the folder
read-only at `/workspace/code` and hands the executor the path there. VCS URLs and data
keys need no mount: the executor in the runtime image fetches them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from servicelab.code_source import local_code_path

#: Where the folder is mounted; the runtime image's working directory is /workspace.
CODE_MOUNT = "/workspace/code"


@dataclass(frozen=True)
class CodeMount:
    #: The folder on the engine's host, mounted read-only at CODE_MOUNT.
    source: str
    #: EXECUTE_CODE inside the container: CODE_MOUNT, or the .py file in it.
    execute_code: str


def code_mount(code: str) -> CodeMount | None:
    """The mount a local-path code source needs, or None for VCS URLs and data keys.

    A `.py` file's whole folder is mounted, so that a `requirements.txt` beside it is
    installed as ML Lab did. Raises SpecError for a bad path (see `local_code_path`).
    """
    path = local_code_path(code)
    if path is None:
        return None
    if path.is_dir():
        return CodeMount(str(path), CODE_MOUNT)
    return CodeMount(str(path.parent), f"{CODE_MOUNT}/{path.name}")
