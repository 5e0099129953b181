"""Runtime-independent checks of the Runtime contract, shared by every runtime's tests.

Each `check_*` function takes a runtime and an *unprepared* spec of the echo service
(`tests/services/echo-service`: a code spec for the local runtime, an image that runs it
for Docker) and starts, inspects and stops its own instances. They poll with deadlines
and never assert durations. Use them from a runtime's test module like:

    async def test_contract_logs(runtime):
        await runtime_contract.check_logs(runtime, echo_spec())
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from servicelab.runtimes.base import Address, Handle, Runtime, RuntimeStatus
from servicelab.spec import Phase, ServiceSpec

SERVICES = Path(__file__).parent / "services"
ECHO_SERVICE = SERVICES / "echo-service"

#: Generous: a loaded 2-core machine runs several suites at once.
DEADLINE = 30.0


def lab_env(spec: ServiceSpec, **extra: str) -> dict[str, str]:
    """The environment a ServiceManager would pass: LAB_* plus the user's keys."""
    env = {
        "LAB_ENDPOINT": "http://127.0.0.1:1",
        "LAB_API_TOKEN": "not-a-real-token",
        "LAB_PROJECT": spec.project,
        "LAB_SERVICE_PATH": f"/api/projects/{spec.project}/services/{spec.name}/",
    }
    return env | spec.env | extra


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE
) -> Any:
    """Call `probe` until it returns something truthy; fail with `what` at the deadline."""
    end = time.monotonic() + deadline
    delay = 0.01
    last: Any = None
    while True:
        try:
            last = await probe()
        except (httpx.TransportError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


async def wait_phase(runtime: Runtime, handle: Handle, phase: Phase) -> RuntimeStatus:
    async def probe() -> RuntimeStatus | None:
        status = await runtime.status(handle)
        return status if status.phase == phase else None

    result: RuntimeStatus = await eventually(probe, f"phase {phase.value}")
    return result


async def get(address: Address, path: str = "/", **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.get(address.url + path, **kwargs)


async def start_serving(
    runtime: Runtime, spec: ServiceSpec, env: dict[str, str] | None = None
) -> tuple[ServiceSpec, Handle, Address]:
    """prepare + start, then wait until the connection port answers 200 at `/`."""
    spec = await runtime.prepare(spec)
    handle = await runtime.start(spec, lab_env(spec) if env is None else env)
    assert spec.connection_port is not None
    port = spec.connection_port

    async def answers() -> Address | None:
        address = await runtime.address(handle, port)
        if address is None:
            status = await runtime.status(handle)
            assert status.phase not in (Phase.FAILED, Phase.STOPPED), status
            return None
        response = await get(address)
        return address if response.status_code == 200 else None

    address: Address = await eventually(answers, "the service to answer HTTP 200")
    return spec, handle, address


@contextlib.asynccontextmanager
async def serving(
    runtime: Runtime, spec: ServiceSpec, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[ServiceSpec, Handle, Address]]:
    spec, handle, address = await start_serving(runtime, spec, env)
    try:
        yield spec, handle, address
    finally:
        await runtime.stop(handle, timeout=5.0)


async def port_closed(address: Address) -> bool:
    try:
        _, writer = await asyncio.open_connection(address.host, address.port)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


# -- the checks ------------------------------------------------------------------------


async def check_serves_http(runtime: Runtime, spec: ServiceSpec) -> None:
    async with serving(runtime, spec) as (_, handle, address):
        assert (await get(address)).text == "ok"
        status = await runtime.status(handle)
        assert status.phase == Phase.RUNNING
        assert status.started_at is not None
        assert await runtime.address(handle, 1) is None  # a port it does not have


async def check_env_passed(runtime: Runtime, spec: ServiceSpec) -> None:
    marker = secrets.token_hex(4)
    env = lab_env(spec, CONTRACT_MARKER=marker, WITH_SPACES="a b  c")
    async with serving(runtime, spec, env) as (_, _handle, address):
        seen = (await get(address, "/env")).json()
        for key, value in env.items():
            if key not in ("PORT", "LAB_ENDPOINT"):
                assert seen.get(key) == value, key
        # A runtime may move the lab's address to where its services reach it (the local
        # sandbox's own network reaches a lab on loopback at its gateway), not its port.
        assert seen["LAB_ENDPOINT"].rsplit(":", 1)[1] == env["LAB_ENDPOINT"].rsplit(":", 1)[1]
        assert seen.get("LAB_DATA_DIR"), "the runtime must say where the data folder is"


async def check_data_survives_restart(runtime: Runtime, spec: ServiceSpec) -> None:
    value = f"kept-{secrets.token_hex(4)}"
    async with serving(runtime, spec) as (_, _handle, address):
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(address.url + "/data", content=value)
        assert response.status_code == 200
    async with serving(runtime, spec) as (_, _handle, address):
        response = await get(address, "/data")
        assert (response.status_code, response.text) == (200, value)


async def check_logs(runtime: Runtime, spec: ServiceSpec) -> None:
    """tail, since and follow; follow ends when the instance stops."""
    async with serving(runtime, spec) as (_, handle, address):
        word = f"tail-{secrets.token_hex(3)}"
        await get(address, f"/log?n=3&text={word}")

        async def has_tail() -> list[str] | None:
            lines = [line async for line in runtime.logs(handle, tail=50)]
            return lines if f"{word} 2" in lines else None

        lines = await eventually(has_tail, "the logged lines")
        assert lines.index(f"{word} 0") < lines.index(f"{word} 1") < lines.index(f"{word} 2")
        assert all("\n" not in line for line in lines)
        last_two = [line async for line in runtime.logs(handle, tail=2)]
        assert len(last_two) == 2

        mark = datetime.now(UTC)
        await wait_clock_past(mark)
        later = f"since-{secrets.token_hex(3)}"
        await get(address, f"/log?n=1&text={later}")

        async def since_mark() -> list[str] | None:
            lines = [line async for line in runtime.logs(handle, since=mark)]
            return lines if f"{later} 0" in lines else None

        recent = await eventually(since_mark, "lines since the mark")
        assert f"{word} 0" not in recent

        followed: list[str] = []
        follow_word = f"follow-{secrets.token_hex(3)}"

        async def follow() -> None:
            async for line in runtime.logs(handle, tail=0, follow=True):
                followed.append(line)

        task = asyncio.create_task(follow())
        try:
            # Logged at each try: lines logged before the follower opened the log are
            # not its to see (tail=0), and under load the first ones may be.
            async def seen() -> bool:
                await get(address, f"/log?n=2&text={follow_word}")
                return f"{follow_word} 1" in followed

            await eventually(seen, "followed lines")
            assert f"{word} 0" not in followed  # tail=0: nothing old
            await runtime.stop(handle, timeout=5.0)
            await asyncio.wait_for(task, DEADLINE)  # follow ends with the instance
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_clock_past(mark: datetime) -> None:
    """Wait until the wall clock has moved past `mark` (log timestamps are wall-clock)."""

    async def past() -> bool:
        return datetime.now(UTC) > mark

    await eventually(past, "the clock to move")


async def check_crash_reports_exit_code(runtime: Runtime, spec: ServiceSpec) -> None:
    async with serving(runtime, spec) as (_, handle, address):
        with contextlib.suppress(httpx.TransportError):
            await get(address, "/crash")
        status = await wait_phase(runtime, handle, Phase.FAILED)
        assert status.exit_code == 3, status
        assert status.reason and "code 3" in status.reason, status
        assert await runtime.address(handle, address.port) is None


async def check_stop(runtime: Runtime, spec: ServiceSpec) -> None:
    spec, handle, address = await start_serving(runtime, spec)
    await runtime.stop(handle, timeout=5.0)
    status = await runtime.status(handle)
    assert status.phase == Phase.STOPPED, status
    assert spec.connection_port is not None
    assert await runtime.address(handle, spec.connection_port) is None
    assert await eventually(lambda: port_closed(address), "the port to close")
    await runtime.stop(handle, timeout=5.0)  # idempotent
    assert (await runtime.status(handle)).phase == Phase.STOPPED


async def check_adopt(
    runtime: Runtime, make_runtime: Callable[[], Runtime], spec: ServiceSpec
) -> Handle:
    """A new runtime object (a restarted lab) finds the instance, exactly once, and can
    reach, inspect and stop it. Returns the adopted handle (already stopped)."""
    spec, handle, _ = await start_serving(runtime, spec)
    try:
        again = make_runtime()
        adopted = [a for a in await again.adopt() if a.key == spec.key]
        assert len(adopted) == 1, adopted
        new_handle = adopted[0].handle
        assert (await again.status(new_handle)).phase == Phase.RUNNING
        assert spec.connection_port is not None
        address = await again.address(new_handle, spec.connection_port)
        assert address is not None
        assert (await get(address)).status_code == 200
        await again.stop(new_handle, timeout=5.0)
        assert (await again.status(new_handle)).phase == Phase.STOPPED
        assert [a for a in await again.adopt() if a.key == spec.key] == []
        await again.close()
        return new_handle
    finally:
        await runtime.stop(handle, timeout=5.0)


ALL_CHECKS = (
    check_serves_http,
    check_env_passed,
    check_data_survives_restart,
    check_logs,
    check_crash_reports_exit_code,
    check_stop,
)
