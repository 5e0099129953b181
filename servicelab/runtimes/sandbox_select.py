"""Whether this lab sandboxes its local services, decided once per process."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from servicelab.runtimes.base import RuntimeUnavailable
from servicelab.runtimes.sandbox import SandboxSupport, detect
from servicelab.runtimes.sandbox_limits import limits_note
from servicelab.runtimes.sandbox_net import ServiceNetwork

log = logging.getLogger("servicelab.runtimes")

SANDBOX_MODES = ("auto", "required", "off")


@functools.cache
def _detected(executor: Path, network: ServiceNetwork) -> SandboxSupport:
    return detect(executor, network)


def sandbox_support(
    mode: str, executor: Path, network: ServiceNetwork = ServiceNetwork()
) -> SandboxSupport:
    """`auto`: sandbox when this machine can; `required`: raise when it cannot; `off`."""
    if mode not in SANDBOX_MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(SANDBOX_MODES)}, not {mode!r}")
    if mode == "off":
        return SandboxSupport(None, "the sandbox is turned off (SERVICELAB_LOCAL_SANDBOX=off)")
    support = _detected(executor, network)
    if mode == "required" and not support.active:
        raise RuntimeUnavailable(
            f"SERVICELAB_LOCAL_SANDBOX=required, but no sandbox is possible: {support.problem}."
        )
    return support


def sandbox_note(support: SandboxSupport) -> str:
    """One line for `servicelab serve` and the UI: what local services are kept from."""
    if support.active:
        return (
            "local services run sandboxed (own uid, PID and network namespaces, read-only "
            "system, own /data and /tmp, ports reachable from the lab only, egress to the "
            f"internet and the lab's API only); {limits_note()}"
        )
    return f"local services run WITHOUT a sandbox, as the lab's own user: {support.problem}"
