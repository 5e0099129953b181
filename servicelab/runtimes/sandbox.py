"""The sandbox every local service runs in: bubblewrap, its own uid, a view of its own.

A sandboxed service (see docs/security.md, "Runtime isolation") runs

- as a uid/gid of its own (`sandbox_ids`), never the lab's user or root, with no
  capabilities and `no_new_privs`;
- in PID, IPC, UTS and cgroup namespaces of its own: it sees only its own processes;
- on a file system that bubblewrap builds from nothing: the system (`/usr`, `/etc`, the
  lab's Python) read-only, its code read-only at /opt/servicelab/code, its virtual
  environment read-only at /opt/servicelab/venv, its own writable `/data` (LAB_DATA_DIR)
  and `/tmp`; the lab's data folder, database, secret key and other services do not exist
  there;
- in a network namespace of its own (`sandbox_netns`): whatever it binds is reached
  only through the lab, and its own connections go only where the egress rule lets
  them (`egress`); with cgroup limits (`sandbox_limits`);
- under a seccomp filter that refuses the system calls a service never needs, file
  handles and namespaces first (`sandbox_seccomp`).

Dependencies install in a first sandbox in which the venv, the fetched code and the uv
cache are writable; the service then runs in a second one in which they are read-only.
bubblewrap runs as root (the lab's user) to build the view and `setpriv` drops to the
service's ids just before the executor starts. Both run with the supervisor's fixed
environment: the service's own reaches the executor through a descriptor
(`supervisor.ENV_FD`), read after the drop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servicelab.runtimes.sandbox_ids import SandboxIds
from servicelab.runtimes.sandbox_net import ServiceNetwork, ensure_host_rules, nameservers
from servicelab.runtimes.sandbox_seccomp import UnsupportedMachine, program
from servicelab.runtimes.supervisor import ENV_FD, LAUNCHER_ENV, SECCOMP_FD, memfd

INSIDE = "/opt/servicelab"
INSIDE_CODE = f"{INSIDE}/code"
INSIDE_VENV = f"{INSIDE}/venv"
INSIDE_WORK = f"{INSIDE}/work"
INSIDE_CACHE = f"{INSIDE}/cache"
INSIDE_BIN = f"{INSIDE}/bin"
#: The executor's folder (servicelab/execute, bound read-only) and the file run in it.
INSIDE_EXECUTOR_DIR = f"{INSIDE}/execute"
INSIDE_EXECUTOR = f"{INSIDE_EXECUTOR_DIR}/run_execute.py"
INSIDE_DATA = "/data"
INSIDE_TMP = "/tmp"
SANDBOX_PATH = f"{INSIDE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Parts of the system every sandbox sees read-only (what exists of them on this machine).
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class SandboxTools:
    bwrap: str
    setpriv: str
    #: The lab's interpreter (its real path) and the folder it lives in, mounted read-only.
    python: str
    python_prefix: str
    #: The real `uv` binary (not a shim), mounted at /opt/servicelab/bin/uv.
    uv: str | None


@dataclass(frozen=True)
class SandboxSupport:
    """Whether this lab can sandbox its local services, and if not why."""

    tools: SandboxTools | None
    problem: str | None = None

    @property
    def active(self) -> bool:
        return self.tools is not None


@dataclass(frozen=True)
class SandboxPaths:
    """The lab-side folders of one instance, and its code (an O_PATH descriptor)."""

    ids: SandboxIds
    data: Path
    tmp: Path
    venv: Path
    work: Path
    cache: Path
    code_fd: int | None = None


def detect(executor: Path, network: ServiceNetwork) -> SandboxSupport:
    """Find the tools, install the host's network rules and prove that a trial sandbox
    runs."""
    if os.geteuid() != 0:
        return SandboxSupport(
            None, "the lab does not run as root, which giving each service a uid of its own needs"
        )
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if not bwrap:
        return SandboxSupport(
            None,
            "bubblewrap is not installed (apt-get install bubblewrap, or scripts/setup-sandbox.sh)",
        )
    if not setpriv:
        return SandboxSupport(None, "setpriv (util-linux) is not installed")
    python = os.path.realpath(sys.executable)
    tools = SandboxTools(
        bwrap=bwrap,
        setpriv=setpriv,
        python=python,
        python_prefix=os.path.realpath(sys.base_prefix),
        uv=_find_uv(),
    )
    problem = ensure_host_rules(network)
    if problem:
        return SandboxSupport(None, f"the services' network could not be set up: {problem}")
    try:
        trial = _trial(tools, executor)
    except UnsupportedMachine as exc:
        return SandboxSupport(None, str(exc))
    if trial.returncode != 0:
        output = (trial.stderr or trial.stdout).strip().splitlines()
        return SandboxSupport(
            None, "a trial sandbox failed: " + (output[-1] if output else str(trial.returncode))
        )
    return SandboxSupport(tools)


def _trial(tools: SandboxTools, executor: Path) -> subprocess.CompletedProcess[str]:
    """A sandbox as a service gets it, seccomp filter included, that checks its uid and
    that the filter holds."""
    check = (
        "import ctypes, os; assert os.getuid() == 65534; "
        "assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == -1"
    )
    seccomp = memfd("servicelab-seccomp", program())
    try:
        return subprocess.run(
            [
                *_system_args(tools),
                "--ro-bind",
                str(executor.parent),
                INSIDE_EXECUTOR_DIR,
                "--seccomp",
                str(seccomp),
                "--",
                *_drop_args(tools, SandboxIds(65534, 65534)),
                tools.python,
                "-S",
                "-c",
                check,
            ],
            env=LAUNCHER_ENV,
            pass_fds=(seccomp,),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(seccomp)


def _find_uv() -> str | None:
    """The real uv binary: beside the interpreter, else on PATH unless it is a shim."""
    candidates = [
        Path(sys.executable).parent / "uv",
        Path(sys.base_prefix) / "bin" / "uv",
        Path(shutil.which("uv") or "/nonexistent"),
    ]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if real.is_file() and os.access(real, os.X_OK) and "/shims/" not in str(candidate):
            with open(real, "rb") as f:
                if f.read(2) != b"#!":  # a script (pyenv shim): it would not work inside
                    return str(real)
    return None


def _system_args(tools: SandboxTools) -> list[str]:
    args = [
        tools.bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "service",
    ]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    resolv = "/etc/resolv.conf"
    if os.path.islink(resolv) and os.path.exists(resolv):
        real = os.path.realpath(resolv)
        args += ["--ro-bind", real, real]
    servers_file = nameservers()[1]
    if servers_file != resolv:  # the host's names a server on its loopback
        args += ["--ro-bind", servers_file, resolv]
    prefix = tools.python_prefix
    # bubblewrap makes missing parents of a mount point 0700 (root's): the service could
    # not reach what is below them, so every parent is made 0755 first.
    made: set[str] = set()
    if not prefix.startswith("/usr/"):
        args += [*_parents(prefix, made), "--ro-bind", prefix, prefix]
    args += _parents(f"{INSIDE_BIN}/uv", made)
    if tools.uv:
        args += ["--ro-bind", tools.uv, f"{INSIDE_BIN}/uv"]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm"]
    return args


def _parents(path: str, made: set[str]) -> list[str]:
    args: list[str] = []
    parts = Path(path).parent.parts[1:]
    for i in range(len(parts)):
        folder = "/" + "/".join(parts[: i + 1])
        if folder not in made:
            made.add(folder)
            args += ["--perms", "0755", "--dir", folder]
    return args


def _drop_args(tools: SandboxTools, ids: SandboxIds) -> list[str]:
    return [
        tools.setpriv,
        f"--reuid={ids.uid}",
        f"--regid={ids.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def sandbox_argv(
    tools: SandboxTools, paths: SandboxPaths, executor: Path, command: list[str], *, install: bool
) -> list[str]:
    """The bwrap command line that runs `command` (executor arguments) in the sandbox."""
    rw = "--bind" if install else "--ro-bind"
    args = [
        *_system_args(tools),
        "--ro-bind",
        str(executor.parent),
        INSIDE_EXECUTOR_DIR,
        "--bind",
        str(paths.data),
        INSIDE_DATA,
        "--bind",
        str(paths.tmp),
        INSIDE_TMP,
        rw,
        str(paths.venv),
        INSIDE_VENV,
        rw,
        str(paths.work),
        INSIDE_WORK,
    ]
    if install:
        args += ["--bind", str(paths.cache), INSIDE_CACHE]
    if paths.code_fd is not None:
        args += ["--ro-bind-fd", str(paths.code_fd), INSIDE_CODE]
    args += ["--seccomp", SECCOMP_FD, "--chdir", INSIDE_DATA, "--", *_drop_args(tools, paths.ids)]
    # -E: the executor's interpreter ignores PYTHON* variables; it takes the service's
    # environment from ENV_FD once it runs as the service.
    return [*args, tools.python, "-E", "-S", INSIDE_EXECUTOR, *command, "--env-fd", ENV_FD]


def sandbox_env(base: dict[str, str]) -> dict[str, str]:
    """The variables that describe the sandbox to the service (after the user's own, which
    cannot move these folders)."""
    return base | {
        "HOME": INSIDE_TMP,
        "TMPDIR": INSIDE_TMP,
        "PATH": SANDBOX_PATH,
        "USER": "service",
        "LOGNAME": "service",
    }


def own(path: Path, ids: SandboxIds, mode: int = 0o700) -> None:
    """Give a folder (made if missing) to the service's ids; re-owns its contents when
    it was someone else's (data kept from an unsandboxed run, a restored backup)."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (ids.uid, ids.gid):
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), ids.uid, ids.gid)
        os.chown(path, ids.uid, ids.gid)
    os.chmod(path, mode)
