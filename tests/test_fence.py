"""The fence wraps a runtime: every method of the Runtime contract must reach the runtime
inside, or a lab on the fence silently loses it (a base-class default would answer)."""

from __future__ import annotations

import inspect

from servicelab.runtimes.base import Runtime
from servicelab.services.fence import FencedRuntime


def test_the_fence_passes_on_every_method_of_the_contract() -> None:
    contract = {
        name
        for name, member in inspect.getmembers(Runtime, inspect.isfunction)
        if not name.startswith("_")
    }
    missing = sorted(name for name in contract if name not in vars(FencedRuntime))
    assert missing == [], f"FencedRuntime does not pass on: {missing}"
