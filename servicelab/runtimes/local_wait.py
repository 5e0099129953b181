"""Waiting on a local service's supervisor: until it started the command, or recorded
its end. The lab holds no pipe to it: it polls the state file and /proc."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servicelab.runtimes.base import RuntimeError_
from servicelab.runtimes.local_state import exited_or_gone, kill_quietly, last_line, read_json


def wait_started(
    proc: subprocess.Popen[bytes], instance_dir: Path, timeout: float
) -> dict[str, Any]:
    """The supervisor's state once it has started the command (or failed to); raises
    RuntimeError_ when the supervisor ends first or `timeout` passes (it is then killed)."""
    state_path = instance_dir / "state.json"
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        state = read_json(state_path)
        if state and state.get("status") != "starting":
            return state
        if proc.poll() is not None:
            raise RuntimeError_(
                "The service's supervisor process ended before starting the service: "
                + last_line(instance_dir / "supervisor.log")
            )
        if time.monotonic() > deadline:
            kill_quietly(proc.pid, signal.SIGKILL)
            raise RuntimeError_(
                f"The service's supervisor did not start it within {timeout:.0f} s."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


async def wait_exited(
    state_path: Path,
    sup: tuple[int | None, int | None],
    timeout: float,
    reap: Callable[[], None],
) -> bool:
    """Poll until the supervisor records the end (True) or is gone or time is up;
    `reap` collects ended supervisors that the lab started (else: zombies, alive)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        reap()
        exited, sup_alive = await asyncio.to_thread(exited_or_gone, state_path, sup)
        if exited:
            return True
        if not sup_alive or time.monotonic() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
