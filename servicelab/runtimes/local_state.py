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
import shutil
import signal
from pathlib import Path
from typing import Any

from servicelab.runtimes.base import AdoptedInstance, Handle, RuntimeStatus
from servicelab.runtimes.local_logs import parse_stamp
from servicelab.runtimes.supervisor import proc_start_ticks, utc_stamp, write_json_atomic
from servicelab.spec import Phase


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


def status_of(handle: Handle) -> RuntimeStatus:
    """What the state file and /proc say of an instance."""
    state = read_json(state_file(handle))
    if state is None:
        return RuntimeStatus(Phase.FAILED, reason="process vanished")
    started = parse_stamp(state.get("started_at"))
    if state.get("status") == "exited":
        if state.get("stop_requested"):
            return RuntimeStatus(
                Phase.STOPPED, exit_code=state.get("exit_code"), started_at=started
            )
        return RuntimeStatus(
            Phase.FAILED,
            reason=exit_reason(state),
            exit_code=state.get("exit_code"),
            started_at=started,
            oom_killed=bool(state.get("oom_killed")),
        )
    if not alive(state.get("supervisor_pid"), state.get("supervisor_start")):
        if alive(state.get("pid"), state.get("pid_start")):
            reason = "supervisor process vanished (the service runs unsupervised)"
        else:
            # A sandbox ends with its supervisor (bubblewrap's --die-with-parent).
            reason = "supervisor process vanished, and the service with it"
        return RuntimeStatus(Phase.FAILED, reason=reason, started_at=started)
    if state.get("stop_requested") or state.get("status") == "stopping":
        return RuntimeStatus(
            Phase.RUNNING, healthy=None, started_at=started, extra={"stopping": True}
        )
    return RuntimeStatus(Phase.RUNNING, healthy=None, started_at=started)


def adoptable(root: Path, instance_id: str) -> list[AdoptedInstance]:
    """Instances of lab `instance_id` under `root` whose supervisor still runs."""
    found: list[AdoptedInstance] = []
    for state_path in sorted(root.glob("*/instances/*/state.json")):
        state = read_json(state_path)
        if not state or state.get("status") == "exited":
            continue
        handle = dict(state.get("handle") or {})
        if handle.get("lab") != instance_id:
            continue
        handle.update(
            supervisor_pid=state.get("supervisor_pid"),
            pid=state.get("pid"),
            started_at=state.get("started_at"),
        )
        if alive(state.get("supervisor_pid"), state.get("supervisor_start")):
            found.append(AdoptedInstance(key=handle["key"], handle=handle))
        elif alive(state.get("pid"), state.get("pid_start")):
            # Its supervisor is gone, so nobody reads its output or records its end:
            # end it rather than leave a copy the manager does not know of.
            killpg_quietly(state["pid"], signal.SIGKILL)
            record_end(state_path, "ended at adoption: its supervisor had vanished")
    return found


def prune_instances(service_dir: Path, keep: int) -> None:
    """Remove folders of long-ended instances, keeping the last few for post-mortems."""
    ended = [
        d
        for d in sorted((service_dir / "instances").iterdir())
        if (read_json(d / "state.json") or {}).get("status") == "exited"
    ]
    for folder in ended[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def kept_keys(root: Path, safe_key: re.Pattern[str]) -> list[str]:
    """Keys of service folders with data and nothing running: data kept from deletes."""
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if safe_key.match(d.name) and (d / "data").is_dir() and not live_handles(d)
    )
