"""What the supervisor of one local instance runs: commands, environment, folders.

Two ways, one result (a command that installs and serves the code on `PORT`):

- sandboxed (the default where possible): the executor runs twice under bubblewrap, as
  the service's own uid: `--requirements-only` with the venv writable, then
  `--code-only` with the venv and code read-only (see `sandbox.py`);
- unsandboxed (the lab is not root, or bubblewrap is missing): the executor runs once as
  the lab's user, with the service's folder paths as they are on the lab's machine.

The supervisor and the sandbox's launchers run as root with a fixed environment
(`supervisor.LAUNCHER_ENV`); each step's environment travels in the supervisor's config
and reaches the executor only after the privilege drop.
"""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from servicelab.code_source import CodeFolder, is_remote, local_code_path, open_code_folder
from servicelab.runtimes.base import DATA_DIR_ENV, SpecError
from servicelab.runtimes.sandbox import (
    INSIDE_CACHE,
    INSIDE_CODE,
    INSIDE_DATA,
    INSIDE_VENV,
    INSIDE_WORK,
    SandboxPaths,
    SandboxTools,
    own,
    sandbox_argv,
    sandbox_env,
)
from servicelab.runtimes.sandbox_ids import service_ids
from servicelab.runtimes.sandbox_limits import MAX_PROCESSES, make_cgroups
from servicelab.runtimes.sandbox_net import SERVICE_PORTS
from servicelab.runtimes.sandbox_seccomp import program as seccomp_program
from servicelab.spec import InvalidSpec, ServiceSpec, code_port

#: The executor (a standard-library package) and the file that runs it by path.
EXECUTOR_PATH = Path(__file__).resolve().parent.parent / "execute" / "run_execute.py"

#: Folder names must be safe whatever a caller puts in a spec.
SAFE_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")

#: Variables of the lab's own environment that a service process needs to work at all
#: (find programs, reach the network through the same certificates and proxies). The rest
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
PASS_ENV_PREFIXES = ("LC_",)
#: The lab's package-index settings (which may hold an index's credentials): given to the
#: step that installs a sandboxed service's dependencies, never to the running service.
INSTALL_ENV_PREFIXES = ("UV_", "PIP_")


@dataclass
class Step:
    """One command of an instance, and the environment the service's code sees in it."""

    argv: list[str]
    env: dict[str, str]


@dataclass
class Launch:
    """One instance as the supervisor's config describes it."""

    steps: list[Step]
    cwd: str
    sandboxed: bool = False
    pass_fds: list[int] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    cgroup_memory: str | None = None
    uid: int | None = None
    #: bubblewrap's seccomp program (see sandbox_seccomp), for sandboxed steps.
    seccomp: bytes | None = None
    #: The sandbox's network (sandbox_net.ServiceNetwork.instance_config).
    network: dict | None = None
    #: RLIMIT_NPROC of a sandboxed instance (its uid is its own); 0: none.
    max_processes: int = MAX_PROCESSES

    def config(self) -> dict:
        return {
            "steps": [asdict(step) for step in self.steps],
            "cwd": self.cwd,
            "sandboxed": self.sandboxed,
            "seccomp": base64.b64encode(self.seccomp).decode() if self.seccomp else None,
            "network": self.network,
            "pass_fds": self.pass_fds,
            "cgroups": self.cgroups,
            "cgroup_memory": self.cgroup_memory,
            "max_processes": self.max_processes if self.sandboxed else 0,
        }


def check_key(key: str) -> None:
    if not SAFE_KEY.match(key) or "--" not in key:
        raise SpecError(f"Invalid service key {key!r}: expected '<project>--<service>'.")


def check_code(code: str) -> str:
    """Validate an EXECUTE_CODE source; return it, local paths made absolute."""
    path = local_code_path(code)
    return code.strip() if path is None else str(path)


def service_port(env: dict[str, str]) -> int:
    try:
        return code_port(env)  # the one rule for $PORT, in spec.py
    except InvalidSpec as exc:
        raise SpecError(str(exc)) from None


def free_port(host: str) -> int:
    """A free port from SERVICE_PORTS, the range the packet-filter rule guards."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = SERVICE_PORTS
    for port in random.sample(range(low, high + 1), 200):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}-{high} for a local service")


def install_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(INSTALL_ENV_PREFIXES)}


def base_env(env: dict[str, str], ports: dict[str, int], port: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    base["PYTHONUNBUFFERED"] = "1"  # log lines appear when written, not at exit
    result = base | env
    result["PORT"] = str(ports[port])
    # Where to listen: loopback, where the proxy reaches unsandboxed local services (a
    # sandboxed one is reached on loopback of its own network too, see sandbox_netns);
    # containers listen on every address of their own.
    result.setdefault("HOST", "127.0.0.1")
    for spec_port, real in ports.items():
        result[f"PORT_{spec_port}"] = str(real)
    return result


def plain_launch(
    env: dict[str, str], code: str, service_dir: Path, uv_cache_dir: Path | None
) -> Launch:
    """The executor as the lab's user: no isolation (see docs/security.md)."""
    # The lab's interpreter folder goes last on PATH: the executor finds `uv` there,
    # but a service's own `python` is its venv's.
    lab_bin = str(Path(sys.executable).parent)
    env = dict(env)
    env["PATH"] = os.pathsep.join(p for p in (env.get("PATH", ""), lab_bin) if p)
    if uv_cache_dir is not None:
        env["UV_CACHE_DIR"] = str(uv_cache_dir)
    data_dir = service_dir / "data"
    env[DATA_DIR_ENV] = str(data_dir)
    venv = service_dir / "venv"
    # By path and without site-packages (-S): the executor is standard-library only by
    # contract, and this saves a good part of its start-up time. The base interpreter and
    # not the lab's venv: code without dependencies runs with it (no venv is made), and
    # must not see the lab's packages.
    python = os.path.realpath(sys.executable)
    argv = [python, "-S", str(EXECUTOR_PATH), "--venv", str(venv), code]
    return Launch([Step(argv, env | install_env())], str(data_dir))


def sandboxed_launch(
    tools: SandboxTools,
    spec: ServiceSpec,
    env: dict[str, str],
    code: str,
    service_dir: Path,
    instance_dir: Path,
) -> Launch:
    """Install in one sandbox, serve from another; the folders given to the service."""
    ids = service_ids(service_dir)
    folders = {name: service_dir / name for name in ("data", "venv", "work", "cache")} | {
        "tmp": instance_dir / "tmp"
    }
    for folder in folders.values():
        own(folder, ids)
    local = None if is_remote(code) else Path(code)
    opened: CodeFolder | None = open_code_folder(local) if local is not None else None
    source = code
    if opened is not None:
        source = INSIDE_CODE if opened.main is None else f"{INSIDE_CODE}/{opened.main}"
    paths = SandboxPaths(
        ids=ids,
        code_fd=opened.fd if opened else None,
        **folders,
    )
    common = ["--venv", INSIDE_VENV, "--workdir", INSIDE_WORK, source]
    env = sandbox_env(env) | {DATA_DIR_ENV: INSIDE_DATA}
    install = sandbox_argv(
        tools, paths, EXECUTOR_PATH, ["--requirements-only", *common], install=True
    )
    serve = sandbox_argv(tools, paths, EXECUTOR_PATH, ["--code-only", *common], install=False)
    launch = Launch(
        # The cache is mounted for the install step alone.
        [Step(install, install_env() | env | {"UV_CACHE_DIR": INSIDE_CACHE}), Step(serve, env)],
        str(service_dir),
        sandboxed=True,
        pass_fds=[opened.fd] if opened else [],
        uid=ids.uid,
        seccomp=seccomp_program(),
    )
    groups = make_cgroups(f"{spec.key}.{instance_dir.name}", spec.resources)
    if groups is not None:
        launch.cgroups, launch.cgroup_memory = groups.dirs, groups.memory_dir
    return launch


def close_fds(launch: Launch) -> None:
    """The lab's copies of descriptors handed to the supervisor."""
    for fd in launch.pass_fds:
        os.close(fd)
