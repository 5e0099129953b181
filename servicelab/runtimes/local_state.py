"""What the lab knows of a local instance: its state file and its processes in /proc.

The lab never holds pipes to a service: everything it knows it reads from the state file
the supervisor keeps and from /proc, which is what makes adoption after a SIGKILL of the
lab exact. A pid is only taken for ours together with its start time (pids are reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from servicelab.runtimes.base import Handle
from servicelab.runtimes.supervisor import proc_start_ticks, utc_stamp, write_json_atomic


def state_file(handle: Handle) -> Path | None:
    """Where an instance's state is; None for a handle that is not one of ours (the
    manager may ask about an empty handle when a start never completed)."""
    folder, instance = handle.get("dir"), handle.get("instance")
    if not isinstance(folder, str) or not isinstance(instance, str) or "/" in instance:
        return None
    return Path(folder) / "instances" / instance / "state.json"


def read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether `pid` still is the process we recorded (not a later one with the same pid)."""
    if not pid:
        return False
    ticks = proc_start_ticks(int(pid))
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def signal_if_alive(
    pid: int | None, start_ticks: int | None, sig: int, *, group: bool = False
) -> bool:
    """Send `sig` to the recorded process (or its process group) if it is still that one."""
    if not pid or not alive(pid, start_ticks):
        return False
    if group:
        killpg_quietly(pid, sig)
    else:
        kill_quietly(pid, sig)
    return True


def exited_or_gone(state_path: Path, sup: tuple[int | None, int | None]) -> tuple[bool, bool]:
    state = read_json(state_path)
    return bool(state and state.get("status") == "exited"), alive(*sup)


def kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def killpg_quietly(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def record_end(state_path: Path, note: str) -> None:
    state = read_json(state_path)
    if state is None or state.get("status") == "exited":
        return
    state.update(
        status="exited",
        stop_requested=True,
        signal=state.get("signal") or int(signal.SIGKILL),
        finished_at=utc_stamp(),
        error=note,
    )
    write_json_atomic(state_path, state)


def live_handles(service_dir: Path) -> list[Handle]:
    handles = []
    for state_path in service_dir.glob("instances/*/state.json"):
        state = read_json(state_path)
        if (
            state
            and state.get("status") != "exited"
            and alive(state.get("supervisor_pid"), state.get("supervisor_start"))
        ):
            handles.append(dict(state.get("handle") or {}))
    return handles


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*:")


def exit_reason(state: dict[str, Any]) -> str:
    if state.get("error"):
        return str(state["error"])
    if state.get("oom_killed"):
        limit = state.get("memory_limit")
        return "killed: out of memory" + (
            f" (limit {int(limit) // (1024 * 1024)} MiB)" if isinstance(limit, int) else ""
        )
    if state.get("signal"):
        try:
            name = signal.Signals(int(state["signal"])).name
        except ValueError:
            name = f"signal {state['signal']}"
        reason = f"killed by signal {name}"
    else:
        code = state.get("exit_code")
        reason = f"exited with code {code}"
        # The executor (like a shell) turns a death by signal N of the code into 128+N.
        if isinstance(code, int) and 128 < code < 128 + signal.NSIG:
            with contextlib.suppress(ValueError):
                reason += f" ({signal.Signals(code - 128).name})"
    # The executor's progress lines ("[execute] running ...") say nothing of the cause;
    # its errors ("[execute] error: requirements.txt failed ...") do.
    stderr = [
        line
        for line in state.get("last_stderr") or []
        if line.strip() and (not line.startswith("[execute] ") or "error" in line.lower())
    ]
    if stderr:
        useful = next((s for s in reversed(stderr) if _EXCEPTION_LINE.match(s)), stderr[-1])
        reason += ": " + useful[:300]
    return reason
