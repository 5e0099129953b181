"""CPU and memory limits of a sandboxed local service, through the kernel's cgroups.

With `resources.memory` or `resources.cpus` set (the spec's own, else the lab's defaults:
`limits.py`; `LocalRuntime.start` fills them in), each instance gets a cgroup of its own
(`servicelab/<key>.<instance>`) on cgroup v2 (`memory.max`, `memory.swap.max`,
`cpu.max`) or, on a machine still on v1, in the v1 `memory` and `cpu` hierarchies
(`memory.limit_in_bytes`, `cpu.cfs_quota_us`). The supervisor puts the sandbox into it
before it runs anything, reads the OOM-kill count when it ends, and removes it.
Where neither is writable, `limits_note()` says so and the limits are not enforced.
The number of processes is bounded for every service by RLIMIT_NPROC (its uid is its own),
set to the lab's process limit (`SERVICELAB_DEFAULT_PIDS`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from servicelab.runtimes.limits import DEFAULT_PIDS
from servicelab.runtimes.supervisor import oom_kills, remove_cgroups
from servicelab.spec import Resources

__all__ = ["Cgroups", "limits_note", "make_cgroups", "oom_kills", "remove_cgroups"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "servicelab"
CPU_PERIOD_US = 100_000
#: Processes (threads count too) one service may have, unless the lab says otherwise.
MAX_PROCESSES = DEFAULT_PIDS


@dataclass
class Cgroups:
    """The cgroup folders of one instance (one per v1 hierarchy, or one on v2)."""

    dirs: list[str] = field(default_factory=list)
    memory_dir: str | None = None
    version: int = 2


def cgroup_version() -> int | None:
    """2 or 1 when this process can make cgroups with memory and cpu limits, else None."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists():
        have = set(controllers.read_text().split())
        return 2 if {"memory", "cpu"} <= have and os.access(CGROUP_ROOT, os.W_OK) else None
    v1 = [CGROUP_ROOT / "memory", CGROUP_ROOT / "cpu"]
    return 1 if all(d.is_dir() and os.access(d, os.W_OK) for d in v1) else None


def limits_note() -> str:
    version = cgroup_version()
    if version is None:
        return "cpu and memory limits are NOT enforced (no writable cgroup memory/cpu controller)"
    return f"cpu and memory limits enforced with cgroup v{version}"


def make_cgroups(name: str, resources: Resources) -> Cgroups | None:
    """Create the instance's cgroups with its limits; None when it has no limits."""
    if not resources.memory and not resources.cpus:
        return None
    version = cgroup_version()
    if version == 2:
        return _make_v2(name, resources)
    if version == 1:
        return _make_v1(name, resources)
    return None


def _make_v2(name: str, resources: Resources) -> Cgroups:
    parent = CGROUP_ROOT / GROUP
    parent.mkdir(exist_ok=True)
    for folder in (CGROUP_ROOT, parent):
        with contextlib.suppress(OSError):
            (folder / "cgroup.subtree_control").write_text("+memory +cpu +pids")
    group = parent / name
    group.mkdir(exist_ok=True)
    if resources.memory:
        (group / "memory.max").write_text(str(resources.memory))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")
    if resources.cpus:
        (group / "cpu.max").write_text(f"{int(resources.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
    return Cgroups([str(group)], str(group) if resources.memory else None, 2)


def _make_v1(name: str, resources: Resources) -> Cgroups:
    result = Cgroups(version=1)
    if resources.memory:
        group = CGROUP_ROOT / "memory" / GROUP / name
        group.mkdir(parents=True, exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(resources.memory))
        with contextlib.suppress(OSError):  # only with swap accounting
            (group / "memory.memsw.limit_in_bytes").write_text(str(resources.memory))
        result.dirs.append(str(group))
        result.memory_dir = str(group)
    if resources.cpus:
        group = CGROUP_ROOT / "cpu" / GROUP / name
        group.mkdir(parents=True, exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(resources.cpus * CPU_PERIOD_US)))
        result.dirs.append(str(group))
    return result
