"""MemoryRuntime, the in-process fake for tests, keeps the shared Runtime contract.

Every runtime runs `runtime_contract.py`; this one runs it in milliseconds, with
nothing installed, which is what makes it fit for tests of everything above a runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from servicelab.config import Settings
from servicelab.runtimes.base import SpecError
from servicelab.runtimes.memory import MemoryRuntime
from servicelab.runtimes.select import make_runtime
from servicelab.services.fence import FencedRuntime
from servicelab.spec import ServiceSpec

from . import runtime_contract as contract

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime() -> AsyncIterator[MemoryRuntime]:
    rt = MemoryRuntime()
    yield rt
    for adopted in await rt.adopt():  # nothing started by a test may outlive it
        await rt.stop(adopted.handle)


def echo(**env: str) -> ServiceSpec:
    return ServiceSpec(project="proj", name="echo", code=str(contract.ECHO_SERVICE), env=env)


@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_contract(
    runtime: MemoryRuntime, check: Callable[[MemoryRuntime, ServiceSpec], Awaitable[None]]
) -> None:
    await check(runtime, echo())


async def test_contract_adopt_with_the_state_of_a_restarted_lab(runtime: MemoryRuntime) -> None:
    await contract.check_adopt(runtime, lambda: MemoryRuntime(runtime.state), echo())


async def test_prepare_completes_ports_and_refuses_what_cannot_run(
    runtime: MemoryRuntime,
) -> None:
    spec = await runtime.prepare(echo(PORT="8080"))
    assert (spec.ports, spec.connection_port) == ([8080], 8080)
    with pytest.raises(SpecError, match="either an image or code"):
        await runtime.prepare(ServiceSpec(project="proj", name="none"))
    with pytest.raises(SpecError, match="PORT"):
        await runtime.prepare(echo(PORT="http"))


async def test_data_is_deleted_with_purge(runtime: MemoryRuntime) -> None:
    async with contract.serving(runtime, echo()) as (spec, _handle, address):
        await contract.httpx.AsyncClient().post(address.url + "/data", content="kept")
    assert await runtime.kept_data() == [spec.key]
    await runtime.delete_data(spec)
    assert await runtime.kept_data() == []


def test_chosen_by_its_entry_point() -> None:
    runtime = make_runtime(Settings(runtime="memory"))
    assert isinstance(runtime, MemoryRuntime) and runtime.isolates_code


def test_the_fence_passes_every_capability_on_by_name() -> None:
    inner = MemoryRuntime()
    inner.isolates_code, inner.isolation_note = False, "services run without a sandbox"
    fenced = FencedRuntime(inner, lambda: True)
    assert (fenced.name, fenced.supports_images, fenced.supports_replicas) == (
        "memory",
        True,
        False,
    )
    assert (fenced.isolates_code, fenced.isolation_note) == (False, inner.isolation_note)
    assert not hasattr(fenced, "state")  # nothing else of the runtime is reached by getattr
