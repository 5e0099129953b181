"""The fence wraps a runtime: every method of the Runtime contract must reach the runtime
inside, or a lab on the fence silently loses it (a base-class default would answer); and
a start that ends after this process stopped leading leaves nothing running."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servicelab.runtimes.base import Runtime
from servicelab.runtimes.local import LocalRuntime
from servicelab.services.fence import FencedRuntime, NotLeader
from servicelab.spec import ServiceSpec

from .runtime_contract import SERVICES, lab_env
from .test_runtime_local import SANDBOX_MODE


def test_the_fence_passes_on_every_method_of_the_contract() -> None:
    contract = {
        name
        for name, member in inspect.getmembers(Runtime, inspect.isfunction)
        if not name.startswith("_")
    }
    missing = sorted(name for name in contract if name not in vars(FencedRuntime))
    assert missing == [], f"FencedRuntime does not pass on: {missing}"


# -- a start that outlives the leadership ---------------------------------------------------
# A real local runtime starts a real service; the leadership is a flag the test turns off
# while the start is under way (the entry check has passed). What was started must be gone,
# and the caller must learn that this process no longer leads. (A start whose caller gives
# up, the other way a leader that lost the lock meets it: tests/test_replicas_frozen.py.)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    lab_id = f"fence-{tmp_path.name[-12:].lower().strip('_')}"
    runtime = LocalRuntime(tmp_path / "services", lab_id, sandbox=SANDBOX_MODE)
    yield runtime
    for adopted in await LocalRuntime(tmp_path / "services", lab_id).adopt():
        await runtime.stop(adopted.handle, timeout=2.0)
    await runtime.close()


def echo() -> ServiceSpec:
    return ServiceSpec(project="proj", name="echo", code=str(SERVICES / "echo-service"))


async def instances(runtime: LocalRuntime) -> list[str]:
    return [a.key for a in await LocalRuntime(runtime.root, runtime.instance_id).adopt()]


@pytest.mark.anyio
async def test_a_start_that_ends_after_the_leadership_is_undone(local: LocalRuntime) -> None:
    leading = [True]
    fenced = FencedRuntime(local, lambda: leading[0])
    spec = await local.prepare(echo())
    starting = asyncio.ensure_future(fenced.start(spec, lab_env(spec)))
    await asyncio.sleep(0)  # one step: the start passed the fence's entry check
    leading[0] = False
    with pytest.raises(NotLeader, match="stopped leading while it started proj--echo"):
        await starting
    assert await instances(local) == []
