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

Where it can (the lab runs as root and bubblewrap is installed), every instance runs in a
sandbox of its own (`sandbox.py`): its own uid, PID namespace and file system view, with
`data/` as its `/data`; the service folder then also holds `work/` (fetched code),
`cache/` (its uv cache) and `sandbox-ids.json` (its uid, kept for its lifetime).

Every instance runs under its own supervisor process (`supervisor.py`) in a session of its
own, so the services outlive the lab; a restarted lab finds them again with `adopt()`.
The lab never holds pipes to a service: everything it knows it reads from the state file
and /proc, which is what makes adoption after a SIGKILL of the lab exact.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from servicelab.runtimes.base import (
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
from servicelab.runtimes.limits import Limits, effective_resources
from servicelab.runtimes.local_launch import (
    EXECUTOR_PATH,
    SAFE_KEY,
    base_env,
    check_code,
    check_key,
    close_fds,
    free_port,
    plain_launch,
    sandboxed_launch,
    service_port,
)
from servicelab.runtimes.local_logs import STAMP_LEN, LogReader, format_since, present
from servicelab.runtimes.local_state import (
    adoptable,
    alive,
    kept_keys,
    live_handles,
    prune_instances,
    read_json,
    record_end,
    signal_if_alive,
    state_file,
    status_of,
)
from servicelab.runtimes.local_wait import wait_exited, wait_started
from servicelab.runtimes.sandbox_net import ServiceNetwork
from servicelab.runtimes.sandbox_select import sandbox_note, sandbox_support
from servicelab.runtimes.service_network import service_network
from servicelab.runtimes.supervisor import LAUNCHER_ENV, write_json_atomic
from servicelab.runtimes.usage import process_group_usage
from servicelab.spec import ServiceSpec

if TYPE_CHECKING:
    from servicelab.config import Settings

__all__ = ["EXECUTOR_PATH", "LocalRuntime"]

SUPERVISOR_PATH = Path(__file__).with_name("supervisor.py")

#: How long the supervisor gives the command after SIGTERM when the lab is not there to
#: enforce `stop(timeout=...)` itself.
SUPERVISOR_KILL_TIMEOUT = 30.0
#: How long `start` waits for a supervisor to report that the command runs.
START_TIMEOUT = 15.0
#: How many ended instances of a service keep their folder (for post-mortems).
KEEP_ENDED_INSTANCES = 5
#: Poll interval of `logs(follow=True)`.
FOLLOW_INTERVAL = 0.2


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
        sandbox: str = "auto",
        limits: Limits | None = None,
        network: ServiceNetwork | None = None,
    ) -> None:
        self.root = Path(root)
        self.instance_id = instance_id
        self.host = host
        self.uv_cache_dir = uv_cache_dir
        self.log_max_bytes = log_max_bytes
        #: The lab's default limits, enforced in the sandbox (cgroups, RLIMIT_NPROC).
        self.limits = limits or Limits()
        #: "auto": sandbox when possible; "required": fail without; "off": never.
        #: What sandboxed services' networks are made of (SERVICELAB_SERVICE_NETWORK...).
        self.network = network or ServiceNetwork()
        self.sandbox = sandbox_support(sandbox, EXECUTOR_PATH, self.network)
        # Code is kept from the lab and other services only in the sandbox.
        self.isolates_code = self.sandbox.active
        self.isolation_note = sandbox_note(self.sandbox)
        #: Supervisors started by this object, reaped when they end (else: zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRuntime:
        """SERVICELAB_RUNTIME=local: services under `<data dir>/services`."""
        data_dir = settings.data_dir.resolve()
        return cls(
            data_dir / "services",
            settings.instance_id,
            uv_cache_dir=settings.uv_cache_dir or data_dir / "cache" / "uv",
            sandbox=settings.local_sandbox,
            limits=Limits.from_settings(settings),
            network=service_network(settings),
        )

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
        check_key(spec.key)
        code = await asyncio.to_thread(check_code, spec.code)
        port = service_port(spec.env)
        return replace(spec, code=code, ports=[port], connection_port=port)

    # -- start -----------------------------------------------------------------------

    async def start(
        self, spec: ServiceSpec, env: dict[str, str], progress: ProgressCallback | None = None
    ) -> Handle:
        if not spec.code:
            raise SpecError(f"Service {spec.name!r} has no code to run on the local runtime.")
        check_key(spec.key)
        spec = replace(spec, resources=effective_resources(spec.resources, self.limits))
        try:
            return await asyncio.to_thread(self._start, spec, env)
        except OSError as exc:  # the contract's errors only, with a message for users
            where = f" ({exc.filename})" if exc.filename else ""
            raise RuntimeError_(
                f"Could not start service {spec.name!r}: {exc.strerror or exc}{where}."
            ) from exc

    def _start(self, spec: ServiceSpec, env: dict[str, str]) -> Handle:
        assert spec.code is not None
        # As `prepare` resolved it: not resolved again, so that a link swapped in since
        # is refused (`open_code_folder`) rather than followed.
        code = spec.code.strip()
        service_dir = self.root / spec.key
        log_dir = service_dir / "logs"
        instance = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        instance_dir = service_dir / "instances" / instance
        for folder in (service_dir / "data", log_dir, instance_dir):
            folder.mkdir(parents=True, exist_ok=True)
        prune_instances(service_dir, KEEP_ENDED_INSTANCES)

        port = service_port(spec.env | env)
        spec_ports = list(dict.fromkeys([*spec.ports, port]))
        if self.sandbox.tools is not None:
            # In a network of its own, a service listens on the ports it asked for.
            ports = {str(p): p for p in spec_ports}
            if "LAB_ENDPOINT" in env:
                env = env | {"LAB_ENDPOINT": self.network.lab_endpoint(env["LAB_ENDPOINT"])}
            proc_env = base_env(env, ports, str(port))
            launch = sandboxed_launch(
                self.sandbox.tools, spec, proc_env, code, service_dir, instance_dir
            )
            launch.max_processes = self.limits.pids or 0
            launch.network = self.network.instance_config(proc_env.get("LAB_ENDPOINT"))
        else:
            ports = {str(p): free_port(self.host) for p in spec_ports}
            proc_env = base_env(env, ports, str(port))
            launch = plain_launch(proc_env, code, service_dir, self.uv_cache_dir)

        handle: Handle = {
            "key": spec.key,
            "dir": str(service_dir),
            "instance": instance,
            "lab": self.instance_id,
            "supervisor_pid": None,
            "pid": None,
            "ports": ports,
            "started_at": None,
            "sandboxed": launch.sandboxed,
            "uid": launch.uid,
        }
        config = {
            "state_path": str(instance_dir / "state.json"),
            "log_dir": str(log_dir),
            "max_bytes": self.log_max_bytes,
            "kill_timeout": SUPERVISOR_KILL_TIMEOUT,
            "handle": handle,
            "memory_limit": spec.resources.memory,
            **launch.config(),
        }
        config_path = str(instance_dir / "config.json")
        write_json_atomic(Path(config_path), config)
        try:
            with open(instance_dir / "supervisor.log", "ab") as supervisor_log:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(SUPERVISOR_PATH), config_path],
                    env=LAUNCHER_ENV,
                    cwd=launch.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=supervisor_log,
                    stderr=supervisor_log,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=launch.pass_fds,
                )
        finally:
            close_fds(launch)
        self._children[proc.pid] = proc

        state = wait_started(proc, instance_dir, START_TIMEOUT)
        handle.update(
            supervisor_pid=proc.pid,
            pid=state.get("pid"),
            started_at=state.get("started_at") or state.get("finished_at"),
        )
        return handle

    # -- status, address -------------------------------------------------------------

    async def status(self, handle: Handle) -> RuntimeStatus:
        self._reap()
        return await asyncio.to_thread(status_of, handle)

    async def address(self, handle: Handle, port: int) -> Address | None:
        real = (handle.get("ports") or {}).get(str(port))
        if real is None:
            return None
        state = await asyncio.to_thread(read_json, state_file(handle))
        if state is None or not _running(state):
            return None
        # A sandboxed instance is at the address of its own network (see sandbox_netns).
        return Address(str(state.get("address") or self.host), int(real))

    async def usage(self, handle: Handle) -> Usage | None:
        state = read_json(state_file(handle))
        if not state or not alive(state.get("pid"), state.get("pid_start")):
            return None
        return await asyncio.to_thread(process_group_usage, int(state["pid"]))

    def _is_running(self, handle: Handle) -> bool:
        return _running(read_json(state_file(handle)))

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
        since_stamp = format_since(since)
        reader = LogReader(log_dir)
        try:
            lines = await asyncio.to_thread(reader.read_existing, tail, since_stamp)
            for line in lines:
                yield present(line, timestamps)
            if not follow:
                return
            while True:
                # Check "ended" before reading, so that lines written just before the end
                # are still read in this last round.
                ended = not await asyncio.to_thread(self._is_live_instance, handle)
                for line in await asyncio.to_thread(reader.read_new):
                    if since_stamp is None or line[:STAMP_LEN] >= since_stamp:
                        yield present(line, timestamps)
                if ended:
                    return
                await asyncio.sleep(FOLLOW_INTERVAL)
        finally:
            reader.close()

    def _is_live_instance(self, handle: Handle) -> bool:
        state = read_json(state_file(handle))
        return bool(
            state
            and state.get("status") != "exited"
            and alive(state.get("supervisor_pid"), state.get("supervisor_start"))
        )

    # -- stop ------------------------------------------------------------------------

    async def stop(self, handle: Handle, *, timeout: float = 10.0) -> None:
        await self._end(handle, timeout)

    async def _end(self, handle: Handle, timeout: float) -> None:
        state_path = state_file(handle)
        state = await asyncio.to_thread(read_json, state_path)
        if state_path is None or state is None or state.get("status") == "exited":
            return
        sup = (state.get("supervisor_pid"), state.get("supervisor_start"))
        child = (state.get("pid"), state.get("pid_start"))
        if await asyncio.to_thread(signal_if_alive, *sup, signal.SIGTERM):
            if await wait_exited(state_path, sup, timeout, self._reap):
                return
            # The service ignored SIGTERM: kill its process group; the supervisor
            # notices, records "killed by signal SIGKILL" and exits.
            await asyncio.to_thread(signal_if_alive, *child, signal.SIGKILL, group=True)
            if await wait_exited(state_path, sup, 5.0, self._reap):
                return
            await asyncio.to_thread(signal_if_alive, *sup, signal.SIGKILL)
        # No supervisor (it was killed): end the service ourselves and record its end.
        await asyncio.to_thread(signal_if_alive, *child, signal.SIGKILL, group=True)
        await asyncio.to_thread(record_end, state_path, "stopped without its supervisor")
        self._reap()

    # -- adopt, data -----------------------------------------------------------------

    async def adopt(self) -> list[AdoptedInstance]:
        return await asyncio.to_thread(adoptable, self.root, self.instance_id)

    async def delete_data(self, spec: ServiceSpec) -> None:
        """Remove the service's folder (data, venv, logs), stopping what still runs there."""
        check_key(spec.key)
        service_dir = self.root / spec.key
        for handle in await asyncio.to_thread(live_handles, service_dir):
            await self.stop(handle)
        await asyncio.to_thread(shutil.rmtree, service_dir, True)

    async def kept_data(self) -> list[str]:
        return await asyncio.to_thread(kept_keys, self.root, SAFE_KEY)

    async def close(self) -> None:
        self._reap()

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]


def _running(state: dict[str, Any] | None) -> bool:
    return bool(
        state
        and state.get("status") in ("running", "stopping")
        and alive(state.get("pid"), state.get("pid_start"))
    )
