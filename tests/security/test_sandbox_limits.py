"""Memory and CPU limits of sandboxed local services, enforced by the kernel's cgroups."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from servicelab.runtimes.local import LocalRuntime
from servicelab.runtimes.sandbox_limits import GROUP, cgroup_version
from servicelab.spec import Phase, Resources, ServiceSpec

from ..runtime_contract import get, serving, wait_phase
from .attack import HOSTILE

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(tmp_path / "services", f"limits-{tmp_path.name[-8:]}", sandbox="required")
    yield rt
    for adopted in await rt.adopt():
        await rt.stop(adopted.handle, timeout=2.0)
    await rt.close()


def cgroup_dirs(group: str) -> list[Path]:
    """The instance's cgroups: one on v2, one per controller (memory, cpu) on v1."""
    root = Path("/sys/fs/cgroup")
    places = [root / GROUP / group, root / "memory" / GROUP / group, root / "cpu" / GROUP / group]
    return [p for p in places if p.is_dir()]


def hostile(**resources: float | int) -> ServiceSpec:
    return ServiceSpec(
        project="proj", name="hog", code=str(HOSTILE), resources=Resources(**resources)
    )


async def test_memory_over_the_limit_is_killed_and_said(runtime: LocalRuntime) -> None:
    assert cgroup_version() is not None, "this machine must enforce limits under make test"
    async with serving(runtime, hostile(memory=96 * MIB, cpus=0.5)) as (spec, handle, address):
        group = f"{spec.key}.{handle['instance']}"
        assert cgroup_dirs(group), "the instance runs in a cgroup of its own"
        assert (await get(address, "/eat?mb=16")).text == "ate"  # below the limit: fine
        with contextlib.suppress(httpx.TransportError):
            await get(address, "/eat?mb=400")
        status = await wait_phase(runtime, handle, Phase.FAILED)
        assert status.reason == "killed: out of memory (limit 96 MiB)", status
    # Its cgroups are removed with it.
    assert cgroup_dirs(group) == []
