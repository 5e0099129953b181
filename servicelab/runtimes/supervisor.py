"""The per-service supervisor process of the local runtime.

    python -I -S servicelab/runtimes/supervisor.py CONFIG.json

`LocalRuntime.start` launches one supervisor per instance in a session of its own, so it
outlives the lab (a SIGKILLed or restarted lab adopts it again). The supervisor:

- starts the service's command in a new process group (or its commands one after the
  other: a sandboxed service installs its dependencies in one sandbox and runs in
  another, see `sandbox.py`), each with the environment its config gives it;
- writes every line of the command's stdout and stderr, prefixed with a UTC timestamp,
  into `current.log` in the service's log folder, rotating it to `previous.log` when it
  would grow past `max_bytes` (so a service's logs are bounded and survive its restarts);
- keeps a small JSON state file (pids, start times, running/exited, exit code or signal,
  the last lines of stderr), always replaced atomically, which is all the lab reads;
- on SIGTERM forwards SIGTERM to the command's process group, SIGKILLs the group after
  `kill_timeout`, records how the command ended and exits.

When the command's main process exits, the rest of its process group is killed too, as a
container's processes die with its PID 1: a restarted service never fights a leftover
child for its port.

It imports only the standard library and is run by path with `-I -S` (no site-packages),
so it starts quickly. It runs as root with the fixed `LAUNCHER_ENV`: the service's
environment comes in its config file and is handed on only to what runs without
privileges. A sandboxed command (bubblewrap, then `setpriv`, both root) gets
`LAUNCHER_ENV` too; the environment reaches the executor after the drop, through a memfd
named by `ENV_FD` in its arguments. Nothing a user sends is in the environment of a
process that still holds privileges (issue 26).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import ctypes
import fcntl
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Longest line kept; a longer one (or output without newlines) is cut into pieces.
MAX_LINE = 64 * 1024
#: How long to keep reading pipes after the command exited (orphans that escaped the
#: process group may hold them open).
DRAIN_SECONDS = 2.0
#: Lines of stderr kept in the state file, for the reason of a failure.
STDERR_LINES = 20

STATE_VERSION = 1

#: The whole environment of the supervisor and of the privileged launchers it runs.
LAUNCHER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
#: Placeholders in a sandboxed command, replaced by descriptors made for each step: the
#: executor's environment (JSON) and bubblewrap's seccomp program.
ENV_FD = "@ENV_FD@"
SECCOMP_FD = "@SECCOMP_FD@"
CLONE_NEWNET = 0x40000000


def utc_stamp() -> str:
    """A fixed-width UTC timestamp (27 characters), so that text order is time order."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def proc_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it is gone.

    A pid plus its start time names one process for good: pids are reused, this pair is
    not. Zombies count as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Readable by the lab's user alone: a config holds the service's environment, tokens too.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RotatingLog:
    """Appends timestamped lines to `current.log`; rotates to `previous.log` at `max_bytes`.

    Two instances of one service may briefly run at once (a restart, a redeploy), so every
    append holds an flock and re-checks which file `current.log` is.
    """

    def __init__(self, log_dir: Path, max_bytes: int) -> None:
        self.current = log_dir / "current.log"
        self.previous = log_dir / "previous.log"
        self.max_bytes = max(max_bytes, 1024)
        self._lock_fd = os.open(log_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is not None:
            try:
                same = os.fstat(self._fd).st_ino == os.stat(self.current).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            os.close(self._fd)
        self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def write_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        prefix = utc_stamp().encode() + b" "
        limit = self.max_bytes - len(prefix) - 1
        entries = [prefix + line[:limit] + b"\n" for line in lines]
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            fd = self._open()
            size = os.fstat(fd).st_size
            batch: list[bytes] = []
            batch_size = 0
            for entry in entries:
                if size + batch_size + len(entry) > self.max_bytes and size + batch_size > 0:
                    if batch:
                        os.write(fd, b"".join(batch))
                        batch, batch_size = [], 0
                    os.replace(self.current, self.previous)
                    fd = self._open()
                    size = 0
                batch.append(entry)
                batch_size += len(entry)
            if batch:
                os.write(fd, b"".join(batch))
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


class Supervisor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.state_path = Path(config["state_path"])
        self.log = RotatingLog(Path(config["log_dir"]), int(config["max_bytes"]))
        self.kill_timeout = float(config.get("kill_timeout", 30.0))
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.stop_requested = False
        self.kill_deadline: float | None = None
        self.state: dict[str, Any] = {
            "version": STATE_VERSION,
            "handle": config.get("handle", {}),
            "supervisor_pid": os.getpid(),
            "supervisor_start": proc_start_ticks(os.getpid()),
            "pid": None,
            "pid_start": None,
            "status": "starting",
            "started_at": None,
            "finished_at": None,
            "exit_code": None,
            "signal": None,
            "stop_requested": False,
            "error": None,
            "last_stderr": [],
        }

    def save(self) -> None:
        self.state["stop_requested"] = self.stop_requested
        self.state["last_stderr"] = list(self.stderr_tail)
        write_json_atomic(self.state_path, self.state)

    def run(self) -> int:
        # Signals only set a flag and wake the select loop through this pipe, so that no
        # handler ever runs in the middle of writing the state or a log line.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        # A handler (not SIG_DFL) so that the command's exit wakes the loop at once.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # A log reader gone away must not kill us; writes to closed pipes raise instead.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

        returncode: int | None = None
        steps = self.config["steps"]
        if self.config.get("network"):
            try:
                self.state.update(enter_own_network(self.config["network"]))
            except (NetworkError, OSError, subprocess.SubprocessError) as exc:
                self._not_started(f"the service's network could not be set up: {exc}")
                steps = []
        for step in steps:
            returncode = self._run_step(step["argv"], step["env"], wake_r)
            if returncode is None or returncode != 0 or self.stop_requested:
                break
        self._end_cgroups()
        if returncode is not None:
            self.state.update(
                status="exited",
                finished_at=utc_stamp(),
                exit_code=returncode if returncode >= 0 else None,
                signal=-returncode if returncode < 0 else None,
            )
        self.save()
        return 0

    def _run_step(self, argv: list[str], env: dict[str, str], wake_r: int) -> int | None:
        """Run one command of the instance (installing, then serving); its return code,
        or None when it could not start (the state then says why)."""
        sandboxed = bool(self.config.get("sandboxed"))
        fds = Descriptors()
        try:
            if sandboxed:
                argv = fds.fill(argv, env, self.config.get("seccomp"))
                env = LAUNCHER_ENV
            proc = subprocess.Popen(
                argv,
                cwd=self.config.get("cwd") or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
                close_fds=True,
                pass_fds=(*(self.config.get("pass_fds") or ()), *fds.passed),
                # Restore default SIGPIPE handling for the service (Python ignores it).
                restore_signals=True,
                preexec_fn=(lambda: _enter_sandbox(self.config)) if sandboxed else None,
            )
        except OSError as exc:
            fds.close()
            self._not_started(f"could not start {argv[0]!r}: {exc.strerror or exc}")
            return None
        fds.close()
        self.state.update(status="running", pid=proc.pid, pid_start=proc_start_ticks(proc.pid))
        self.state["started_at"] = self.state.get("started_at") or utc_stamp()
        self.save()
        self._pump(proc, wake_r)
        return proc.wait()

    def _not_started(self, error: str) -> None:
        self.state.update(status="exited", error=error, exit_code=127, finished_at=utc_stamp())
        self.log.write_lines([f"[servicelab] {error}".encode()])

    def _end_cgroups(self) -> None:
        memory_dir = self.config.get("cgroup_memory")
        if memory_dir and oom_kills(memory_dir) > 0:
            self.state["oom_killed"] = True
            self.state["memory_limit"] = self.config.get("memory_limit")
        dirs = list(self.config.get("cgroups") or [])
        # The processes are gone once the sandbox's PID 1 is; give the kernel a moment.
        deadline = time.monotonic() + 2.0
        while dirs and time.monotonic() < deadline:
            remove_cgroups(dirs)
            dirs = [d for d in dirs if os.path.isdir(d)]
            if dirs:
                time.sleep(0.05)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _pump(self, proc: subprocess.Popen[bytes], wake_r: int) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        partial: dict[int, bytes] = {}
        is_stderr = {proc.stdout.fileno(): False, proc.stderr.fileno(): True}
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream.fileno(), selectors.EVENT_READ)
            partial[stream.fileno()] = b""
        sel.register(wake_r, selectors.EVENT_READ)
        pgid = proc.pid
        forwarded = False
        drain_deadline: float | None = None

        while True:
            for key, _ in sel.select(timeout=0.5):
                fd = key.fd
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    continue
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    self._emit([partial.pop(fd)] if partial.get(fd) else [], is_stderr[fd])
                    continue
                buf = partial[fd] + data
                lines = buf.split(b"\n")
                partial[fd] = lines.pop()
                if len(partial[fd]) > MAX_LINE:
                    lines.append(partial[fd])
                    partial[fd] = b""
                self._emit([line.rstrip(b"\r") for line in lines], is_stderr[fd])

            now = time.monotonic()
            if self.stop_requested and not forwarded:
                forwarded = True
                self.kill_deadline = now + self.kill_timeout
                self.state["status"] = "stopping"
                self.save()
                _killpg(pgid, signal.SIGTERM)
            if self.kill_deadline is not None and now >= self.kill_deadline:
                self.kill_deadline = None
                _killpg(pgid, signal.SIGKILL)
            if drain_deadline is None and proc.poll() is not None:
                # The main process is gone: its helpers go with it, and pipes that
                # escaped processes still hold open are given up after a moment.
                _killpg(pgid, signal.SIGKILL)
                drain_deadline = now + DRAIN_SECONDS
            if drain_deadline is not None and (len(sel.get_map()) == 1 or now >= drain_deadline):
                break

        for fd, rest in partial.items():
            if rest:
                self._emit([rest], is_stderr[fd])
        sel.close()

    def _emit(self, lines: list[bytes], stderr: bool) -> None:
        if not lines:
            return
        self.log.write_lines(lines)
        if stderr:
            for line in lines:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self.stderr_tail.append(text[:500])


def memfd(name: str, data: bytes) -> int:
    """An inheritable memfd holding `data`, read from its start."""
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class NetworkError(Exception):
    """The sandbox's network could not be set up (the service is not started)."""


class Descriptors:
    """What one sandboxed step hands bubblewrap: the executor's environment and the
    seccomp program, in fresh memfds (bubblewrap reads its program to the end, so each
    step needs its own)."""

    def __init__(self) -> None:
        self.passed: list[int] = []

    def fill(self, argv: list[str], env: dict[str, str], seccomp: str | None) -> list[str]:
        """The command with its placeholders replaced by the descriptors made for it."""
        names = {ENV_FD: self._pass(memfd("servicelab-env", json.dumps(env).encode()))}
        if seccomp is not None:
            names[SECCOMP_FD] = self._pass(memfd("servicelab-seccomp", base64.b64decode(seccomp)))
        return [names.get(arg, arg) for arg in argv]

    def _pass(self, fd: int) -> str:
        self.passed.append(fd)
        return str(fd)

    def close(self) -> None:
        for fd in self.passed:
            os.close(fd)
        self.passed = []


def enter_own_network(network: dict[str, Any]) -> dict[str, str]:
    """Move this supervisor, and so every sandbox it starts, into a network namespace of
    its own, set up by `sandbox_netns` before any step runs: one address for the whole
    instance, and nothing left behind when the supervisor ends (the namespace lives as
    long as a process in it; its veth pair goes with it). Returns the address and the
    host's side of the veth pair."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
            raise NetworkError(f"unshare: {os.strerror(ctypes.get_errno())}")
        setup = subprocess.run(
            [sys.executable, "-I", "-S", network["setup"], str(host), json.dumps(network)],
            env=LAUNCHER_ENV,
            pass_fds=(host,),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(host)
    if setup.returncode != 0:
        raise NetworkError(setup.stderr.strip() or "the network setup failed")
    try:
        made = json.loads(setup.stdout)
        return {"address": str(made["address"]), "interface": str(made["interface"])}
    except (ValueError, KeyError, TypeError):
        raise NetworkError(f"the network setup answered {setup.stdout[:200]!r}") from None


def _enter_sandbox(config: dict[str, Any]) -> None:
    """In the child, before bubblewrap runs: what must hold from its first instruction.

    SIGTERM and SIGINT are ignored by bubblewrap's outer process, so that a stop reaches
    the service (the whole process group gets it) and not only the process whose death
    would tear the sandbox down at once; the executor sets its own handlers. The cgroups
    and the process limit are entered before anything of the service runs.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for folder in config.get("cgroups") or ():
        with open(os.path.join(folder, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    limit = int(config.get("max_processes") or 0)
    if limit:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def oom_kills(memory_dir: str | None) -> int:
    """How often the kernel killed a process of this cgroup for memory (0 if unknown)."""
    if not memory_dir:
        return 0
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(memory_dir, name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def remove_cgroups(dirs: list[str]) -> None:
    for folder in dirs:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: supervisor.py CONFIG.json", file=sys.stderr)
        return 2
    config_path = Path(argv[0])
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # The environment (LAB_API_TOKEN, the user's secrets) lives on in this process only.
    config_path.unlink(missing_ok=True)
    return Supervisor(config).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
