"""The lab's default limits: what a service instance gets when its spec asks for none.

A lab is shared by people who do not trust each other's code (docs/security.md): without
limits one service's leak, fork bomb or busy loop takes the machine from every other.
So every instance runs with a memory, CPU and process limit: the spec's own where it
asks for one, else the operator's defaults (`SERVICELAB_DEFAULT_MEMORY`, `_CPUS`,
`_PIDS`; 0 turns one off).

The rule is `effective_resources`, applied by each runtime where it turns a spec into
its engine's limits (`docker.resource_options`, `kubernetes_manifests.container_resources`,
the local sandbox's cgroups and RLIMIT_NPROC), and not written into the stored spec:

- the stored spec keeps what its user asked for, so that the UI can say which limits
  are the lab's defaults, and a changed default applies at the next start of every
  service instead of being frozen into specs deployed before;
- only a runtime knows what a default may become on its engine: Docker cannot give more
  CPUs than the engine has (an explicit ask beyond is an error, a default is capped),
  and on Kubernetes a default is a ceiling (a limit) but never a reservation (a request);
- processes are no field of a spec: a runtime-wide limit only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from servicelab.spec import Resources

GIB = 1024**3
#: Defaults that no usual service reaches (a JupyterLab, a model server of a few GiB
#: asks for more explicitly) and that keep a runaway one from taking a shared machine.
DEFAULT_MEMORY = 2 * GIB
DEFAULT_CPUS = 2.0
#: Processes and threads of one instance (cgroup `pids.max`, RLIMIT_NPROC): a few
#: hundred threads are plenty for a web service; a fork bomb stops here.
DEFAULT_PIDS = 512


@dataclass(frozen=True)
class Limits:
    """The operator's defaults; None: no default for that limit."""

    memory: int | None = DEFAULT_MEMORY
    cpus: float | None = DEFAULT_CPUS
    pids: int | None = DEFAULT_PIDS

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """From `SERVICELAB_DEFAULT_MEMORY`, `_CPUS` and `_PIDS` (0: none)."""
        return cls(
            memory=int(settings.default_memory) or None,
            cpus=float(settings.default_cpus) or None,
            pids=int(settings.default_pids) or None,
        )


#: No defaults at all (what a lab did before issue 26; for tests of the rule).
NO_LIMITS = Limits(memory=None, cpus=None, pids=None)


def effective_resources(
    asked: Resources, limits: Limits, *, engine_cpus: float | None = None
) -> Resources:
    """The resources an instance runs with: what the spec asks for, else the default.

    `engine_cpus`: what the engine has, when it refuses more (Docker): a default above it
    becomes all of it, since a default must never make a service impossible to start.
    """
    cpus = asked.cpus or limits.cpus
    if not asked.cpus and cpus and engine_cpus:
        cpus = min(cpus, engine_cpus)
    return replace(asked, memory=asked.memory or limits.memory, cpus=cpus)


def defaulted(asked: Resources, limits: Limits) -> set[str]:
    """Which limits of an instance are the lab's defaults ("memory", "cpus", "pids")."""
    names = {name for name in ("memory", "cpus") if not getattr(asked, name)}
    names = {name for name in names if getattr(limits, name)}
    return names | ({"pids"} if limits.pids else set())


@dataclass(frozen=True)
class ShownLimit:
    """One limit as the service page shows it."""

    name: str
    value: float | int | None
    lab_default: bool


def shown_limits(asked: Resources, limits: Limits) -> list[ShownLimit]:
    """Memory, CPUs and processes as an instance of this spec runs with them, each said
    to be the spec's own or the lab's default (None: no limit)."""
    effective = effective_resources(asked, limits)
    defaults = defaulted(asked, limits)
    return [
        ShownLimit("memory", effective.memory, "memory" in defaults),
        ShownLimit("cpus", effective.cpus, "cpus" in defaults),
        ShownLimit("pids", limits.pids, "pids" in defaults),
    ]
