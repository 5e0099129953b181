"""The uid/gid each sandboxed local service runs as: its own, allocated once, kept.

A service keeps its ids for as long as its folder exists (its `/data` is owned by them,
and a lab restarted after a crash adopts its running processes by them). Ids are unique
on the whole machine, not only in one lab: two labs on one host must never give two
services the same uid, or one could signal or read the other. So the allocation is a
small registry under /var/lib, changed under an exclusive lock, in which entries of
service folders that no longer exist are freed.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Sandboxed services run as uids (and gids) from this range, far above any account a
#: system creates (and above the 100000+ ranges of /etc/subuid), below 2^31.
UID_BASE = 1_900_000_000
UID_COUNT = 1_000_000
UID_LAST = UID_BASE + UID_COUNT - 1

REGISTRY = Path("/var/lib/servicelab/sandbox-ids.json")
#: The file in a service's folder that remembers its ids.
IDS_FILE = "sandbox-ids.json"


@dataclass(frozen=True)
class SandboxIds:
    uid: int
    gid: int


def service_ids(service_dir: Path, registry: Path = REGISTRY) -> SandboxIds:
    """The ids of the service whose folder is `service_dir`, allocated on first use."""
    key = str(service_dir.resolve())
    registry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(registry.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        owners = _read(registry)
        mine = _read(service_dir / IDS_FILE).get("uid")
        if isinstance(mine, int) and owners.get(str(mine)) in (None, key):
            if str(mine) not in owners:  # the registry was lost: claim the kept ids again
                owners[str(mine)] = key
                _write(registry, owners)
            return SandboxIds(mine, mine)
        # Free the ids of service folders that are gone (deleted labs, purged services).
        owners = {uid: path for uid, path in owners.items() if Path(path, IDS_FILE).exists()}
        taken = {int(uid) for uid in owners}
        uid = next((u for u in range(UID_BASE, UID_LAST + 1) if u not in taken), None)
        if uid is None:
            raise OSError(f"all {UID_COUNT} sandbox uids are in use (see {registry})")
        owners[str(uid)] = key
        _write(registry, owners)
        _write(service_dir / IDS_FILE, {"uid": uid, "gid": uid})
        return SandboxIds(uid, uid)
    finally:
        os.close(lock_fd)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
