"""How a code service's local folder gets into its container: copied, never bound.

`EXECUTE_CODE` may name a folder (or a `.py` file) on the lab's machine. Inside a
container that path means nothing, so the Docker runtime copies the folder into the
created container at `/workspace/code` before it starts, and hands the executor the path
there. That folder is an anonymous volume of the container (the engine refuses to copy
into a read-only root file system, `docker_hardening`), and the copied files belong to
root: the service, which runs as another user, can read its code but not change it.
Copied rather than bind-mounted, because a bind is resolved by the engine when the
container is created: a symbolic link swapped in after the lab checked the path would
mount another folder of the host. The copy reads the folder the lab opened once
(`open_code_folder`), walks it without following links, and keeps links as links, which
inside the container point into the container. VCS URLs and data keys need no copy: the
executor in the runtime image fetches them itself.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from servicelab.code_source import is_remote, local_code_path, open_code_folder

#: Where the folder goes (a volume of the container); the runtime image's working
#: directory is /workspace.
CODE_MOUNT = "/workspace/code"
#: Archives up to this size stay in memory while they are sent to the engine.
SPOOL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class CodeMount:
    #: The resolved path on the lab's machine (a folder, or a .py file in one).
    source: str
    #: EXECUTE_CODE inside the container: CODE_MOUNT, or the .py file in it.
    execute_code: str


def resolved_code(code: str) -> str:
    """The source as `prepare` stores it: a local path checked and resolved (no links),
    which is then the one path the service ever gets; VCS URLs and data keys as given."""
    path = local_code_path(code)
    return code.strip() if path is None else str(path)


def code_mount(code: str) -> CodeMount | None:
    """Where a local-path code source (as resolved by `resolved_code`) goes, or None for
    VCS URLs and data keys. Not resolved again: `code_archive` refuses the path if it
    is no longer what was resolved.

    A `.py` file's whole folder is copied, so that a `requirements.txt` beside it is
    installed as ML Lab did.
    """
    if is_remote(code):
        return None
    path = Path(code.strip())
    if path.suffix == ".py":
        return CodeMount(str(path), f"{CODE_MOUNT}/{path.name}")
    return CodeMount(str(path), CODE_MOUNT)


def code_archive(mount: CodeMount) -> IO[bytes]:
    """A tar of the code folder's contents (members relative to it, owned by root), for
    `put_archive(CODE_MOUNT)`."""
    opened = open_code_folder(Path(mount.source))
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
    try:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for folder, dirs, files, dir_fd in os.fwalk(".", dir_fd=opened.fd):
                prefix = os.path.normpath(folder)
                for name in sorted(dirs + files):
                    member = name if prefix == "." else f"{prefix}/{name}"
                    _add(tar, member, name, dir_fd)
    finally:
        os.close(opened.fd)
    spool.seek(0)
    return spool


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, 0, 0
    return info


def _add(tar: tarfile.TarFile, member: str, name: str, dir_fd: int) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        info = _info(member, tarfile.SYMTYPE, 0o777)
        info.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        tar.addfile(_info(member, tarfile.DIRTYPE, 0o755))
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with open(fd, "rb") as f:
            info = _info(member, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
            info.size = os.fstat(f.fileno()).st_size
            info.mtime = int(st.st_mtime)
            tar.addfile(info, f)
    # Sockets, FIFOs and devices are not code: left out.
