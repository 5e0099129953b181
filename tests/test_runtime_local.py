"""LocalRuntime with real processes and real HTTP on 127.0.0.1.

The runtime-independent checks live in `runtime_contract.py` (the Docker runtime's tests
run them too); this module adds what is particular to local processes: path checks,
supervisors outliving a SIGKILLed lab, pid reuse, log files and their rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from servicelab.runtimes.base import Handle, SpecError
from servicelab.runtimes.local import EXECUTOR_PATH, LocalRuntime
from servicelab.runtimes.local_state import alive as _alive
from servicelab.runtimes.local_state import exit_reason as _exit_reason
from servicelab.runtimes.local_state import read_json, state_file
from servicelab.runtimes.supervisor import proc_start_ticks
from servicelab.spec import Phase, ServiceSpec

from . import runtime_contract as contract
from .runtime_contract import SERVICES, eventually, get, serving, start_serving, wait_phase

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def lab_id(tmp_path: Path) -> str:
    return f"test-{tmp_path.name[-12:].lower().strip('_')}"


#: Under `make test` the sandbox must be there (scripts/setup-sandbox.sh installs it):
#: every test of this module then runs sandboxed, and fails rather than run without.
SANDBOX_MODE = "required" if os.environ.get("SERVICELAB_TEST_SANDBOX") else "auto"


@pytest.fixture
async def runtime(tmp_path: Path, lab_id: str) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(tmp_path / "services", lab_id, sandbox=SANDBOX_MODE)
    yield rt
    # Nothing started by a test may outlive it.
    for adopted in await LocalRuntime(tmp_path / "services", lab_id).adopt():
        await rt.stop(adopted.handle, timeout=2.0)
    await rt.close()


def echo(name: str = "echo", **env: str) -> ServiceSpec:
    return ServiceSpec(project="proj", name=name, code=str(SERVICES / "echo-service"), env=env)


def service_processes(code: Path, root: Path, uid: int | None = None) -> list[int]:
    """Pids of processes running `code` itself (not its supervisor, sandbox or executor)
    for services under `root` (other test runs may run the same code at the same time);
    for a sandboxed service, the processes of its own `uid`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            owner = entry.stat().st_uid
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        data_dir = next(
            (
                e[len(b"LAB_DATA_DIR=") :].decode()
                for e in environ
                if e.startswith(b"LAB_DATA_DIR=")
            ),
            "",
        )
        ours = (
            owner == uid
            if uid is not None
            else str(code) in args and data_dir.startswith(str(root))
        )
        if (
            ours
            and not any(
                a.endswith(("servicelab.execute", "execute.py", "supervisor.py", "bwrap"))
                for a in args
            )
            and proc_start_ticks(int(entry.name)) is not None
        ):
            pids.append(int(entry.name))
    return pids


# -- the shared contract ---------------------------------------------------------------


@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_contract(
    runtime: LocalRuntime, check: Callable[[LocalRuntime, ServiceSpec], Awaitable[None]]
) -> None:
    await check(runtime, echo())


async def test_contract_adopt_finds_exactly_one(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await contract.check_adopt(
        runtime, lambda: LocalRuntime(tmp_path / "services", runtime.instance_id), echo()
    )
    assert json.loads(json.dumps(handle)) == handle


# -- prepare ---------------------------------------------------------------------------


async def test_prepare_completes_ports_and_paths(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(SERVICES)
    spec = await runtime.prepare(ServiceSpec(project="p1", name="s1", code="echo-service"))
    assert spec.code == str(SERVICES / "echo-service")
    assert (spec.ports, spec.connection_port) == ([8091], 8091)
    spec = await runtime.prepare(echo(PORT="8080"))
    assert (spec.ports, spec.connection_port) == ([8080], 8080)
    main_py = SERVICES / "echo-service" / "__main__.py"
    single = await runtime.prepare(ServiceSpec(project="p1", name="s2", code=str(main_py)))
    assert single.code == str(main_py)
    for source in (
        "git+https://example.invalid/repo.git@main#subdirectory=svc",
        "hg+https://example.invalid/repo",
        "models/my-service.zip",
        "datasets/code.py.v3",
    ):
        spec = await runtime.prepare(ServiceSpec(project="p1", name="s1", code=source))
        assert spec.code == source  # fetched by the executor


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ServiceSpec(project="p1", name="s1", image="nginx:1"), "needs the docker runtime"),
        (ServiceSpec(project="p1", name="s1", code="/no/such/folder"), "does not exist"),
        (ServiceSpec(project="p1", name="s1", code=str(SERVICES / "no-main")), "__main__.py"),
        (
            ServiceSpec(project="p1", name="s1", code=str(SERVICES / "no-main" / "app.txt")),
            "does not exist",
        ),
        (
            ServiceSpec(
                project="p1",
                name="s1",
                code=str(SERVICES / "with-requirements" / "requirements.txt"),
            ),
            ".py file",
        ),
        (ServiceSpec(project="p1", name="s1", code="https://example.invalid/x.py"), "VCS URL"),
        (ServiceSpec(project="p1", name="s1"), "No code"),
        (echo(PORT="http"), "PORT must be a port number"),
        (ServiceSpec(project="../x", name="s1", code=str(SERVICES / "echo-service")), "key"),
    ],
)
async def test_prepare_explains_what_to_fix(
    runtime: LocalRuntime, spec: ServiceSpec, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        await runtime.prepare(spec)


# -- start, status ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [SANDBOX_MODE, "off"])
async def test_env_data_dir_and_ports(tmp_path: Path, lab_id: str, mode: str) -> None:
    runtime = LocalRuntime(tmp_path / "services", lab_id, sandbox=mode)
    async with serving(runtime, echo(PORT="8080")) as (spec, handle, address):
        seen = (await get(address, "/env")).json()
        assert seen["PORT"] == str(address.port) == str(handle["ports"]["8080"])
        host_data = tmp_path / "services" / spec.key / "data"
        assert seen["LAB_DATA_DIR"] == ("/data" if handle["sandboxed"] else str(host_data))
        assert handle["sandboxed"] == runtime.sandbox.active == (handle["uid"] is not None)
        assert seen["LAB_PROJECT"] == "proj"
        assert "SERVICELAB_SECRET_OF_THE_LAB" not in seen
        assert set(handle) >= {
            "key",
            "dir",
            "instance",
            "supervisor_pid",
            "pid",
            "ports",
            "started_at",
        }


async def test_lab_secrets_are_not_passed_on(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICELAB_SECRET_KEY", "lab-only")
    async with serving(runtime, echo()) as (_, _handle, address):
        seen = (await get(address, "/env")).json()
        assert "SERVICELAB_SECRET_KEY" not in seen
        assert seen["PATH"]


async def test_failure_reason_names_the_exception(runtime: LocalRuntime) -> None:
    spec = await runtime.prepare(
        ServiceSpec(project="proj", name="broken", code=str(SERVICES / "missing-module"))
    )
    handle = await runtime.start(spec, {})
    status = await wait_phase(runtime, handle, Phase.FAILED)
    assert status.exit_code == 1
    assert status.reason is not None
    assert status.reason.startswith("exited with code 1: ModuleNotFoundError"), status.reason
    assert await runtime.address(handle, 8091) is None


async def test_stop_kills_a_service_that_ignores_sigterm(runtime: LocalRuntime) -> None:
    spec, handle, address = await start_serving(runtime, echo(IGNORE_SIGTERM="1"))
    await runtime.stop(handle, timeout=0.5)
    assert (await runtime.status(handle)).phase == Phase.STOPPED
    assert await eventually(lambda: contract.port_closed(address), "the port to close")
    assert not _alive(handle["pid"], None)


async def test_killed_supervisor_is_reported_and_stop_ends_the_service(
    runtime: LocalRuntime,
) -> None:
    spec, handle, address = await start_serving(runtime, echo())
    os.kill(handle["supervisor_pid"], signal.SIGKILL)
    status = await wait_phase(runtime, handle, Phase.FAILED)
    assert status.reason and "supervisor" in status.reason
    await runtime.stop(handle, timeout=2.0)
    assert await eventually(lambda: contract.port_closed(address), "the port to close")
    assert (await runtime.status(handle)).phase == Phase.STOPPED


async def test_a_reused_pid_is_not_taken_for_ours() -> None:
    me = os.getpid()
    ticks = proc_start_ticks(me)
    assert ticks is not None
    assert _alive(me, ticks)
    assert not _alive(me, ticks - 1)  # same pid, another process start time
    assert not _alive(None, None)


async def test_two_services_run_side_by_side(runtime: LocalRuntime) -> None:
    async with (
        serving(runtime, echo("one")) as (_, h1, a1),
        serving(runtime, echo("two")) as (_, h2, a2),
    ):
        assert (a1.host, a1.port) != (a2.host, a2.port)
        assert h1["dir"] != h2["dir"]


def host_network() -> tuple[set[str], int]:
    """The host's sandbox interfaces, and how many packet-filter rules it has."""
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {n for n in names if n.startswith("slv")}, len(rules.splitlines())


async def test_a_stopped_service_leaves_no_rule_interface_or_namespace(
    runtime: LocalRuntime,
) -> None:
    if not runtime.sandbox.active:
        pytest.skip("no sandbox on this machine (under make test it is required)")
    _, rules_before = host_network()
    async with serving(runtime, echo("ruled")) as (_, handle, address):
        state = read_json(state_file(handle))
        assert state is not None and address.host == state["address"]
        interfaces, rules = host_network()
        assert state["interface"] in interfaces
        assert rules == rules_before  # the instance's rules live in its own namespace
        # bubblewrap's outer process stays on the host; the sandbox is its child.
        with open(f"/proc/{state['pid']}/task/{state['pid']}/children") as f:  # noqa: ASYNC230
            inner = f.read().split()
        namespace = os.readlink(f"/proc/{inner[0]}/ns/net")
        assert namespace != os.readlink("/proc/self/ns/net")

    async def gone() -> bool:
        return state["interface"] not in host_network()[0]

    await eventually(gone, "the instance's interface removed")
    assert host_network()[1] == rules_before


# -- logs ------------------------------------------------------------------------------


async def test_logs_survive_restarts_and_keep_timestamps(runtime: LocalRuntime) -> None:
    async with serving(runtime, echo()) as (_, _handle, address):
        await get(address, "/log?n=1&text=first-instance")
    async with serving(runtime, echo()) as (_, handle, address):
        await get(address, "/log?n=1&text=second-instance")

        async def both() -> list[str] | None:
            lines = [line async for line in runtime.logs(handle)]
            return lines if "second-instance 0" in lines else None

        lines = await eventually(both, "the logs of both instances")
        assert lines.index("first-instance 0") < lines.index("second-instance 0")
        stamped = [line async for line in runtime.logs(handle, tail=1, timestamps=True)]
        assert stamped[0][:2] == "20" and stamped[0][26:28] == "Z "


async def test_logs_rotate_within_bounds_and_follow_across_rotations(
    tmp_path: Path, lab_id: str
) -> None:
    max_bytes = 4096
    rt = LocalRuntime(tmp_path / "services", lab_id, log_max_bytes=max_bytes, sandbox=SANDBOX_MODE)
    async with serving(rt, echo()) as (spec, handle, address):
        followed: list[str] = []

        async def follow() -> None:
            async for line in rt.logs(handle, tail=0, follow=True):
                followed.append(line)

        task = asyncio.create_task(follow())
        try:
            # `tail=0` follows from where the log ends when the follower opens it: lines
            # logged before that are not its to see. So wait until it is reading (a mark
            # logged at each try, until one arrives) before the rounds.
            async def reading() -> bool:
                await get(address, "/log?n=1&text=follower-reading")
                return "follower-reading 0" in followed

            await eventually(reading, "the follower reading")
            # Several rounds, each more than one file's worth, with pauses between them
            # so that the follower sees the files in several states.
            for round_ in range(4):
                await get(address, f"/log?n=60&text=round{round_}-line-with-some-padding")

                async def seen(r: int = round_) -> bool:
                    return f"round{r}-line-with-some-padding 59" in followed

                await eventually(seen, f"round {round_} followed")
            log_dir = Path(handle["dir"]) / "logs"
            for name in ("current.log", "previous.log"):
                assert (log_dir / name).stat().st_size <= max_bytes
            ours = [line for line in followed if line.startswith("round")]
            expected = [f"round{r}-line-with-some-padding {i}" for r in range(4) for i in range(60)]
            assert ours == expected
            tail = [line async for line in rt.logs(handle, tail=5)]
            assert tail[-1].startswith("request GET /log")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- surviving the lab -----------------------------------------------------------------

LAB_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from servicelab.runtimes.local import LocalRuntime
    from servicelab.spec import ServiceSpec

    async def main():
        rt = LocalRuntime(Path(sys.argv[1]), sys.argv[2], sandbox=sys.argv[4])
        spec = await rt.prepare(ServiceSpec(project="proj", name="survivor", code=sys.argv[3]))
        handle = await rt.start(spec, {"LAB_PROJECT": "proj"})
        print(json.dumps(handle), flush=True)
        await asyncio.Event().wait()  # a lab that runs until it is killed

    asyncio.run(main())
    """
)


async def test_services_outlive_a_killed_lab_and_are_adopted_once(
    tmp_path: Path, lab_id: str
) -> None:
    root = tmp_path / "services"
    code = SERVICES / "echo-service"
    lab = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAB_SCRIPT,
        str(root),
        lab_id,
        str(code),
        SANDBOX_MODE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert lab.stdout is not None
        line = await asyncio.wait_for(lab.stdout.readline(), contract.DEADLINE)
        started: Handle = json.loads(line)
    finally:
        lab.send_signal(signal.SIGKILL)
        await lab.wait()

    rt = LocalRuntime(root, lab_id, sandbox=SANDBOX_MODE)
    adopted = await rt.adopt()
    assert [a.key for a in adopted] == ["proj--survivor"]
    handle = adopted[0].handle
    assert handle["instance"] == started["instance"]
    try:
        status = await rt.status(handle)
        assert status.phase == Phase.RUNNING
        address = await rt.address(handle, 8091)
        assert address is not None

        async def answers() -> bool:
            return (await get(address)).status_code == 200

        await eventually(answers, "the adopted service to answer")
        assert len(service_processes(code.resolve(), root, handle["uid"])) == 1
        # Another lab (another instance id) sharing the folder does not take it.
        assert await LocalRuntime(root, lab_id + "-other").adopt() == []
    finally:
        await rt.stop(handle, timeout=5.0)
    assert service_processes(code.resolve(), root, handle["uid"]) == []


# -- data ------------------------------------------------------------------------------


async def test_kept_data_and_delete_data(runtime: LocalRuntime) -> None:
    spec = echo("keeper")
    async with serving(runtime, spec):
        assert "proj--keeper" not in await runtime.kept_data()
    assert "proj--keeper" in await runtime.kept_data()
    await runtime.delete_data(spec)
    assert "proj--keeper" not in await runtime.kept_data()
    assert not (runtime.root / "proj--keeper").exists()


# -- dependencies (needs the executor) -------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not EXECUTOR_PATH.exists(), reason="servicelab/execute.py not there yet")
async def test_requirements_install_into_the_service_venv(tmp_path: Path, lab_id: str) -> None:
    rt = LocalRuntime(tmp_path / "services", lab_id, sandbox=SANDBOX_MODE)
    spec = ServiceSpec(project="proj", name="deps", code=str(SERVICES / "with-requirements"))
    async with serving(rt, spec) as (spec, handle, address):
        assert (await get(address)).text == "six 1.17.0"
        assert (Path(handle["dir"]) / "venv").is_dir()


async def test_a_handle_that_is_not_ours_is_harmless(runtime: LocalRuntime) -> None:
    for handle in ({}, {"dir": "/nonexistent", "instance": "x"}, {"dir": 3, "instance": None}):
        assert (await runtime.status(handle)).phase == Phase.FAILED
        assert await runtime.address(handle, 8091) is None
        assert [line async for line in runtime.logs(handle)] == []
        await runtime.stop(handle)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"signal": 9}, "killed by signal SIGKILL"),
        ({"exit_code": 137}, "exited with code 137 (SIGKILL)"),
        (
            {"exit_code": 2, "last_stderr": ["[execute] running x ...", "usage: bad"]},
            "exited with code 2: usage: bad",
        ),
        (
            {
                "exit_code": 1,
                "last_stderr": [
                    "Traceback (most recent call last):",
                    "KeyError: 'x'",
                    "  during cleanup",
                    "[execute] the code exited with code 1.",
                ],
            },
            "exited with code 1: KeyError: 'x'",
        ),
        (
            {"exit_code": 1, "last_stderr": ["[execute] error: requirements.txt failed"]},
            "exited with code 1: [execute] error: requirements.txt failed",
        ),
        (
            {"exit_code": 127, "error": "could not start 'x': No such file"},
            "could not start 'x': No such file",
        ),
    ],
)
def test_exit_reasons(state: dict[str, object], reason: str) -> None:
    assert _exit_reason(state) == reason
