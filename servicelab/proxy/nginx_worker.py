"""The user nginx's workers run as, and the folder they share with the lab (issue 26).

nginx's master binds the public port, so a lab that owns a privileged port runs it as
root; its workers, which parse every byte a client sends, need not. When the lab runs as
root they run as an unprivileged user (`SERVICELAB_NGINX_USER`; by default `www-data`,
else `nginx`, else `nobody`, whichever exists): a hole in a worker then gets that user,
not the machine.

A worker must reach two things of the lab: its Unix socket, and the temporary folders
for request bodies and responses. They cannot stay in `<data_dir>/nginx`, since the data
folder is the lab's alone (0700, `bootstrap.prepare_data_dir`). So they move to a run
folder of their own, `/run/servicelab/nginx-<hash of the data folder>/`: root's, open to
the workers' group only to pass through (0710), with `tmp/` the worker user's. Only root
and that group reach the socket, which trusts the X-Forwarded-* headers it is sent.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

#: Where run folders go: root's tmpfs on most systems, made again at every start.
RUN_ROOT = Path("/run/servicelab")
#: Tried in order when no user is named: Debian's and most distributions' nginx user, the
#: one nginx's own packages make, and the one every system has.
DEFAULT_USERS = ("www-data", "nginx", "nobody")


@dataclass(frozen=True)
class Worker:
    """An unprivileged user for nginx's workers, with its primary group."""

    user: str
    group: str
    uid: int
    gid: int


def worker_user(name: str = "") -> Worker | None:
    """The user the workers run as; None when they run as the lab's own user: the lab is
    not root (nginx cannot switch users then), or the operator named `root`."""
    if os.geteuid() != 0 or name == "root":
        return None
    for candidate in [name] if name else DEFAULT_USERS:
        try:
            entry = pwd.getpwnam(candidate)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            break
        try:
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            group = str(entry.pw_gid)
        return Worker(entry.pw_name, group, entry.pw_uid, entry.pw_gid)
    wanted = repr(name) if name else f"any of {', '.join(DEFAULT_USERS)}"
    raise ValueError(
        f"SERVICELAB_NGINX_USER: no unprivileged user {wanted} on this machine for nginx's "
        "workers: create one (useradd --system --no-create-home --shell /usr/sbin/nologin "
        "servicelab-nginx) and name it in SERVICELAB_NGINX_USER."
    )


def run_folder(root: Path) -> Path:
    """The run folder of the plane whose files are in `root` (one per data folder)."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return RUN_ROOT / f"nginx-{digest}"


def make_run_folder(run: Path, worker: Worker) -> None:
    """The run folder, root's and passable by the workers' group, with `tmp/` theirs;
    nginx's master makes the folders inside `tmp/` and gives them to the worker user."""
    RUN_ROOT.mkdir(exist_ok=True)
    RUN_ROOT.chmod(0o755)  # the lab's umask (0077) would close it to the workers
    run.mkdir(mode=0o710, exist_ok=True)
    os.chown(run, 0, worker.gid)
    run.chmod(0o710)
    tmp = run / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    os.chown(tmp, worker.uid, worker.gid)
    tmp.chmod(0o700)
