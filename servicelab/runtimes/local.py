"""The local-process runtime: runs code services as plain processes, needing nothing installed.

Each service owns a folder `<root>/<project>--<service>/`:

    data/                 persistent, passed as LAB_DATA_DIR (kept across restarts/redeploys)
    venv/                 its own virtual environment, made by the executor with uv
    logs/current.log      stdout+stderr lines with a UTC timestamp prefix, rotated to
    logs/previous.log     previous.log; shared by all instances, so logs survive restarts
    instances/<id>/       one folder per started instance: config.json (what the supervisor
                          runs; private to the lab's user, and removed once read, since it
                          holds the service's environment), state.json (what it saw),
                          supervisor.log

Every instance runs under its own supervisor process (`supervisor.py`) in a session of its
own, so the services outlive the lab; a restarted lab finds them again with `adopt()`.
The lab never holds pipes to a service: everything it knows it reads from the state file
and /proc, which is what makes adoption after a SIGKILL of the lab exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from servicelab.code_source import local_code_path
from servicelab.runtimes.base import (
    DATA_DIR_ENV,
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeError_,
    RuntimeStatus,
    SpecError,
    Usage,
)
from servicelab.runtimes.supervisor import proc_start_ticks, utc_stamp, write_json_atomic
from servicelab.runtimes.usage import process_group_usage
from servicelab.spec import InvalidSpec, Phase, ServiceSpec, code_port

SUPERVISOR_PATH = Path(__file__).with_name("supervisor.py")
EXECUTOR_PATH = Path(__file__).resolve().parent.parent / "execute.py"

#: Folder names must be safe whatever a caller puts in a spec.
SAFE_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")

#: Variables of the lab's own environment that a service process needs to work at all
#: (find programs, install packages through the same certificates and proxies). The rest
#: of the lab's environment (its secrets above all) is not passed on.
PASS_ENV = {
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
}
PASS_ENV_PREFIXES = ("LC_", "UV_", "PIP_")

#: How long the supervisor gives the command after SIGTERM when the lab is not there to
#: enforce `stop(timeout=...)` itself.
SUPERVISOR_KILL_TIMEOUT = 30.0
#: How long `start` waits for a supervisor to report that the command runs.
START_TIMEOUT = 15.0
#: How many ended instances of a service keep their folder (for post-mortems).
KEEP_ENDED_INSTANCES = 5
#: Poll interval of `logs(follow=True)`.
FOLLOW_INTERVAL = 0.2

STAMP_LEN = 27  # len("2024-01-02T03:04:05.123456Z")


class LocalRuntime(Runtime):
    """Runs code services as supervised local processes listening on 127.0.0.1."""

    name: ClassVar[str] = "local"
    supports_images: ClassVar[bool] = False

    def __init__(
        self,
        root: Path,
        instance_id: str,
        host: str = "127.0.0.1",
        uv_cache_dir: Path | None = None,
        log_max_bytes: int = 5 * 1024 * 1024,
    ) -> None:
        self.root = Path(root)
        self.instance_id = instance_id
        self.host = host
        self.uv_cache_dir = uv_cache_dir
        self.log_max_bytes = log_max_bytes
        #: Supervisors started by this object, reaped when they end (else: zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- prepare ---------------------------------------------------------------------

    async def prepare(
        self, spec: ServiceSpec, progress: ProgressCallback | None = None
    ) -> ServiceSpec:
        if spec.image and not spec.code:
            raise SpecError(
                f"Service {spec.name!r} is the image {spec.image!r}, which needs the docker "
                "runtime; this lab runs the local runtime (set SERVICELAB_RUNTIME=docker and "
                "start a Docker engine)."
            )
        if not spec.code:
            raise SpecError("No code to run: give a local path, a VCS URL or a data key.")
        _check_key(spec.key)
        code = await asyncio.to_thread(_check_code, spec.code)
        port = _service_port(spec.env)
        return replace(spec, code=code, ports=[port], connection_port=port)

    # -- start -----------------------------------------------------------------------

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        if not spec.code:
            raise SpecError(f"Service {spec.name!r} has no code to run on the local runtime.")
        _check_key(spec.key)
        try:
            return await asyncio.to_thread(self._start, spec, env)
        except OSError as exc:  # the contract's errors only, with a message for users
            where = f" ({exc.filename})" if exc.filename else ""
            raise RuntimeError_(
                f"Could not start service {spec.name!r}: {exc.strerror or exc}{where}."
            ) from exc

    def _start(self, spec: ServiceSpec, env: dict[str, str]) -> Handle:
        assert spec.code is not None
        code = _check_code(spec.code)
        service_dir = self.root / spec.key
        data_dir, log_dir = service_dir / "data", service_dir / "logs"
        venv_dir = service_dir / "venv"
        instance = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        instance_dir = service_dir / "instances" / instance
        for folder in (data_dir, log_dir, instance_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._prune_instances(service_dir)

        service_port = _service_port(spec.env | env)
        spec_ports = list(dict.fromkeys([*spec.ports, service_port]))
        ports = {str(p): _free_port(self.host) for p in spec_ports}

        proc_env = self._process_env(env, data_dir, ports, str(service_port))
        if EXECUTOR_PATH.exists():
            # By path and without site-packages (-S): the executor is standard-library
            # only by contract, and this saves a good part of its start-up time.
            argv = [sys.executable, "-S", str(EXECUTOR_PATH), "--venv", str(venv_dir), code]
        else:  # until the executor lands: run the code with the lab's own interpreter
            argv = [sys.executable, code]

        handle: Handle = {
            "key": spec.key,
            "dir": str(service_dir),
            "instance": instance,
            "lab": self.instance_id,
            "supervisor_pid": None,
            "pid": None,
            "ports": ports,
            "started_at": None,
        }
        config = {
            "state_path": str(instance_dir / "state.json"),
            "log_dir": str(log_dir),
            "max_bytes": self.log_max_bytes,
            "kill_timeout": SUPERVISOR_KILL_TIMEOUT,
            "argv": argv,
            "cwd": str(data_dir),
            "handle": handle,
        }
        config_path = str(instance_dir / "config.json")
        write_json_atomic(Path(config_path), config)
        with open(instance_dir / "supervisor.log", "ab") as supervisor_log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR_PATH), config_path],
                env=proc_env,
                cwd=str(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=supervisor_log,
                stderr=supervisor_log,
                start_new_session=True,
                close_fds=True,
            )
        self._children[proc.pid] = proc

        state = self._wait_started(proc, instance_dir)
        handle.update(
            supervisor_pid=proc.pid,
            pid=state.get("pid"),
            started_at=state.get("started_at") or state.get("finished_at"),
        )
        return handle

    def _process_env(
        self, env: dict[str, str], data_dir: Path, ports: dict[str, int], port: str
    ) -> dict[str, str]:
        base = {
            k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)
        }
        # The lab's interpreter folder goes last on PATH: the executor finds `uv` there,
        # but a service's own `python` is its venv's.
        lab_bin = str(Path(sys.executable).parent)
        base["PATH"] = os.pathsep.join(p for p in (base.get("PATH", ""), lab_bin) if p)
        base["PYTHONUNBUFFERED"] = "1"  # log lines appear when written, not at exit
        if self.uv_cache_dir is not None:
            base["UV_CACHE_DIR"] = str(self.uv_cache_dir)
        result = base | env
        result[DATA_DIR_ENV] = str(data_dir)
        result["PORT"] = str(ports[port])
        # Where to listen: loopback only, as the proxy reaches local services there
        # (containers listen on every address of their own network).
        result.setdefault("HOST", "127.0.0.1")
        for spec_port, real in ports.items():
            result[f"PORT_{spec_port}"] = str(real)
        return result

    def _wait_started(self, proc: subprocess.Popen[bytes], instance_dir: Path) -> dict[str, Any]:
        """Wait until the supervisor has started the command (or failed to)."""
        state_path = instance_dir / "state.json"
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.002
        while True:
            state = _read_json(state_path)
            if state and state.get("status") != "starting":
                return state
            if proc.poll() is not None:
                raise RuntimeError_(
                    "The service's supervisor process ended before starting the service: "
                    + _last_line(instance_dir / "supervisor.log")
                )
            if time.monotonic() > deadline:
                _kill_quietly(proc.pid, signal.SIGKILL)
                raise RuntimeError_(
                    f"The service's supervisor did not start it within {START_TIMEOUT:.0f} s."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _prune_instances(self, service_dir: Path) -> None:
        """Remove folders of long-ended instances, keeping the last few for post-mortems."""
        ended = [
            d
            for d in sorted((service_dir / "instances").iterdir())
            if (_read_json(d / "state.json") or {}).get("status") == "exited"
        ]
        for folder in ended[:-KEEP_ENDED_INSTANCES]:
            shutil.rmtree(folder, ignore_errors=True)

    # -- status, address -------------------------------------------------------------

    async def status(self, handle: Handle) -> RuntimeStatus:
        return await asyncio.to_thread(self._status, handle)

    def _status(self, handle: Handle) -> RuntimeStatus:
        self._reap()
        state = _read_json(_state_path(handle))
        if state is None:
            return RuntimeStatus(Phase.FAILED, reason="process vanished")
        started = _parse_stamp(state.get("started_at"))
        if state.get("status") == "exited":
            if state.get("stop_requested"):
                return RuntimeStatus(
                    Phase.STOPPED, exit_code=state.get("exit_code"), started_at=started
                )
            return RuntimeStatus(
                Phase.FAILED,
                reason=_exit_reason(state),
                exit_code=state.get("exit_code"),
                started_at=started,
            )
        if not _alive(state.get("supervisor_pid"), state.get("supervisor_start")):
            if _alive(state.get("pid"), state.get("pid_start")):
                reason = "supervisor process vanished (the service runs unsupervised)"
            else:
                reason = "process vanished"
            return RuntimeStatus(Phase.FAILED, reason=reason, started_at=started)
        if state.get("stop_requested") or state.get("status") == "stopping":
            return RuntimeStatus(
                Phase.RUNNING, healthy=None, started_at=started, extra={"stopping": True}
            )
        return RuntimeStatus(Phase.RUNNING, healthy=None, started_at=started)

    async def address(self, handle: Handle, port: int) -> Address | None:
        real = (handle.get("ports") or {}).get(str(port))
        if real is None:
            return None
        running = await asyncio.to_thread(self._is_running, handle)
        return Address(self.host, int(real)) if running else None

    async def usage(self, handle: Handle) -> Usage | None:
        state = _read_json(_state_path(handle))
        if not state or not _alive(state.get("pid"), state.get("pid_start")):
            return None
        return await asyncio.to_thread(process_group_usage, int(state["pid"]))

    def _is_running(self, handle: Handle) -> bool:
        state = _read_json(_state_path(handle))
        return bool(
            state
            and state.get("status") in ("running", "stopping")
            and _alive(state.get("pid"), state.get("pid_start"))
        )

    # -- logs ------------------------------------------------------------------------

    async def logs(
        self,
        handle: Handle,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[str]:
        if not isinstance(handle.get("dir"), str):
            return
        log_dir = Path(handle["dir"]) / "logs"
        since_stamp = _format_since(since)
        reader = _LogReader(log_dir)
        try:
            lines = await asyncio.to_thread(reader.read_existing, tail, since_stamp)
            for line in lines:
                yield _present(line, timestamps)
            if not follow:
                return
            while True:
                # Check "ended" before reading, so that lines written just before the end
                # are still read in this last round.
                ended = not await asyncio.to_thread(self._is_live_instance, handle)
                for line in await asyncio.to_thread(reader.read_new):
                    if since_stamp is None or line[:STAMP_LEN] >= since_stamp:
                        yield _present(line, timestamps)
                if ended:
                    return
                await asyncio.sleep(FOLLOW_INTERVAL)
        finally:
            reader.close()

    def _is_live_instance(self, handle: Handle) -> bool:
        state = _read_json(_state_path(handle))
        return bool(
            state
            and state.get("status") != "exited"
            and _alive(state.get("supervisor_pid"), state.get("supervisor_start"))
        )

    # -- stop ------------------------------------------------------------------------

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        state_path = _state_path(handle)
        state = await asyncio.to_thread(_read_json, state_path)
        if state_path is None or state is None or state.get("status") == "exited":
            return
        sup = (state.get("supervisor_pid"), state.get("supervisor_start"))
        child = (state.get("pid"), state.get("pid_start"))
        if await asyncio.to_thread(_signal_if_alive, *sup, signal.SIGTERM):
            if await self._wait_exited(state_path, sup, timeout):
                return
            # The service ignored SIGTERM: kill its process group; the supervisor
            # notices, records "killed by signal SIGKILL" and exits.
            await asyncio.to_thread(_signal_if_alive, *child, signal.SIGKILL, group=True)
            if await self._wait_exited(state_path, sup, 5.0):
                return
            await asyncio.to_thread(_signal_if_alive, *sup, signal.SIGKILL)
        # No supervisor (it was killed): end the service ourselves and record its end.
        await asyncio.to_thread(_signal_if_alive, *child, signal.SIGKILL, group=True)
        await asyncio.to_thread(_record_end, state_path, "stopped without its supervisor")
        self._reap()

    async def _wait_exited(
        self, state_path: Path, sup: tuple[int | None, int | None], timeout: float
    ) -> bool:
        """Poll until the supervisor records the end (True) or is gone or time is up."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            self._reap()
            exited, sup_alive = await asyncio.to_thread(_exited_or_gone, state_path, sup)
            if exited:
                return True
            if not sup_alive or time.monotonic() > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- adopt, data -----------------------------------------------------------------

    async def adopt(self) -> list[AdoptedInstance]:
        return await asyncio.to_thread(self._adopt)

    def _adopt(self) -> list[AdoptedInstance]:
        found: list[AdoptedInstance] = []
        for state_path in sorted(self.root.glob("*/instances/*/state.json")):
            state = _read_json(state_path)
            if not state or state.get("status") == "exited":
                continue
            handle = dict(state.get("handle") or {})
            if handle.get("lab") != self.instance_id:
                continue
            handle.update(
                supervisor_pid=state.get("supervisor_pid"),
                pid=state.get("pid"),
                started_at=state.get("started_at"),
            )
            if _alive(state.get("supervisor_pid"), state.get("supervisor_start")):
                found.append(AdoptedInstance(key=handle["key"], handle=handle))
            elif _alive(state.get("pid"), state.get("pid_start")):
                # Its supervisor is gone, so nobody reads its output or records its end:
                # end it rather than leave a copy the manager does not know of.
                _killpg_quietly(state["pid"], signal.SIGKILL)
                _record_end(state_path, "ended at adoption: its supervisor had vanished")
        return found

    async def delete_data(self, spec: ServiceSpec) -> None:
        """Remove the service's folder (data, venv, logs), stopping what still runs there."""
        _check_key(spec.key)
        service_dir = self.root / spec.key
        for handle in await asyncio.to_thread(_live_handles, service_dir):
            await self.stop(handle)
        await asyncio.to_thread(shutil.rmtree, service_dir, True)

    async def kept_data(self) -> list[str]:
        return await asyncio.to_thread(self._kept_data)

    def _kept_data(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if SAFE_KEY.match(d.name) and (d / "data").is_dir() and not _live_handles(d)
        )

    async def close(self) -> None:
        self._reap()

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]


# -- helpers ---------------------------------------------------------------------------


def _check_key(key: str) -> None:
    if not SAFE_KEY.match(key) or "--" not in key:
        raise SpecError(f"Invalid service key {key!r}: expected '<project>--<service>'.")


def _check_code(code: str) -> str:
    """Validate an EXECUTE_CODE source; return it, local paths made absolute."""
    path = local_code_path(code)
    return code.strip() if path is None else str(path)


def _service_port(env: dict[str, str]) -> int:
    try:
        return code_port(env)  # the one rule for $PORT, in spec.py
    except InvalidSpec as exc:
        raise SpecError(str(exc)) from None


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _state_path(handle: Handle) -> Path | None:
    """Where an instance's state is; None for a handle that is not one of ours (the
    manager may ask about an empty handle when a start never completed)."""
    folder, instance = handle.get("dir"), handle.get("instance")
    if not isinstance(folder, str) or not isinstance(instance, str) or "/" in instance:
        return None
    return Path(folder) / "instances" / instance / "state.json"


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether `pid` still is the process we recorded (not a later one with the same pid)."""
    if not pid:
        return False
    ticks = proc_start_ticks(int(pid))
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def _signal_if_alive(
    pid: int | None, start_ticks: int | None, sig: int, *, group: bool = False
) -> bool:
    """Send `sig` to the recorded process (or its process group) if it is still that one."""
    if not pid or not _alive(pid, start_ticks):
        return False
    if group:
        _killpg_quietly(pid, sig)
    else:
        _kill_quietly(pid, sig)
    return True


def _exited_or_gone(state_path: Path, sup: tuple[int | None, int | None]) -> tuple[bool, bool]:
    state = _read_json(state_path)
    return bool(state and state.get("status") == "exited"), _alive(*sup)


def _kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _killpg_quietly(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _record_end(state_path: Path, note: str) -> None:
    state = _read_json(state_path)
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


def _live_handles(service_dir: Path) -> list[Handle]:
    handles = []
    for state_path in service_dir.glob("instances/*/state.json"):
        state = _read_json(state_path)
        if (
            state
            and state.get("status") != "exited"
            and _alive(state.get("supervisor_pid"), state.get("supervisor_start"))
        ):
            handles.append(dict(state.get("handle") or {}))
    return handles


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*:")


def _exit_reason(state: dict[str, Any]) -> str:
    if state.get("error"):
        return str(state["error"])
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


def _parse_stamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _format_since(since: datetime | None) -> str | None:
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _present(line: str, timestamps: bool) -> str:
    return line if timestamps else line[STAMP_LEN + 1 :]


class _LogReader:
    """Reads `previous.log` then `current.log`, and then follows `current.log`.

    Keeps its open file and offset; when `current.log` is rotated away (a new inode under
    the name), it finishes the old file through its open descriptor, then switches.
    """

    def __init__(self, log_dir: Path) -> None:
        self.current = log_dir / "current.log"
        self.previous = log_dir / "previous.log"
        self._file: Any = None
        self._rest = b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_existing(self, tail: int | None, since: str | None) -> list[str]:
        # Open current first: if a rotation happens between the two opens, we may read a
        # few lines twice rather than lose them.
        self._file = _open_or_none(self.current)
        lines: deque[str] = deque(maxlen=tail if tail is not None else None)
        if tail == 0:
            if self._file is not None:
                self._file.seek(0, os.SEEK_END)
            return []
        prev_file = _open_or_none(self.previous)
        if prev_file is not None:
            with prev_file:
                _collect(prev_file.read(), lines, since)
        if self._file is not None:
            data = self._file.read()
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            _collect(data[:cut], lines, since)
        return list(lines)

    def read_new(self) -> list[str]:
        lines: deque[str] = deque()
        if self._file is None:
            self._file = _open_or_none(self.current)
            if self._file is None:
                return []
        while True:
            # Look for a rotation before reading: once `current.log` names a new file, no
            # writer appends to the old one, so this read gets all of it.
            try:
                rotated = os.stat(self.current).st_ino != os.fstat(self._file.fileno()).st_ino
            except FileNotFoundError:
                rotated = False
            data = self._rest + self._file.read()
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            _collect(data[:cut], lines, None)
            if not rotated:
                return list(lines)
            # Rotated twice since the last poll: the file now named previous.log was
            # never read; read it whole before moving on.
            old_ino = os.fstat(self._file.fileno()).st_ino
            self._file.close()
            self._rest = b""
            missed = _open_or_none(self.previous)
            if missed is not None:
                with missed:
                    if os.fstat(missed.fileno()).st_ino != old_ino:
                        _collect(missed.read(), lines, None)
            self._file = _open_or_none(self.current)
            if self._file is None:
                return list(lines)


def _open_or_none(path: Path) -> Any:
    try:
        return open(path, "rb")  # noqa: SIM115 - kept open across calls by _LogReader
    except FileNotFoundError:
        return None


def _collect(data: bytes, out: deque[str], since: str | None) -> None:
    for raw in data.split(b"\n"):
        if not raw:
            continue
        line = raw.decode("utf-8", "replace")
        if len(line) <= STAMP_LEN or line[STAMP_LEN] != " ":
            continue  # not a line of ours (a torn write, or a foreign file)
        if since is not None and line[:STAMP_LEN] < since:
            continue
        out.append(line)
