"""Runtimes are found by entry points: a fourth one is a package of its own.

The package here is written into a temporary folder (a module and the `*.dist-info`
folder an installer would write) and put on sys.path: nothing of servicelab is edited,
and `SERVICELAB_RUNTIME=fourth` builds its runtime.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from servicelab.config import Settings
from servicelab.registry import RUNTIMES, UnknownImplementation
from servicelab.runtimes.base import Runtime
from servicelab.runtimes.select import make_runtime

MODULE = "servicelab_fourth_runtime"

FOURTH = """
from servicelab.runtimes.memory import MemoryRuntime


class FourthRuntime(MemoryRuntime):
    name = "fourth"

    @classmethod
    def from_settings(cls, settings):
        runtime = cls()
        runtime.instance_id = settings.instance_id
        return runtime


class NotARuntime:
    pass
"""


@pytest.fixture
def fourth_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{MODULE}.py").write_text(FOURTH)
    dist_info = tmp_path / "servicelab_fourth_runtime-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: servicelab-fourth-runtime\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [servicelab.runtimes]
            fourth = {MODULE}:FourthRuntime
            wrong = {MODULE}:NotARuntime
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)


def test_servicelab_declares_its_own_runtimes() -> None:
    assert {"local", "docker", "kubernetes", "memory"} <= set(RUNTIMES.names())


def test_a_fourth_runtime_is_a_package_with_an_entry_point(fourth_package: Path) -> None:
    assert "fourth" in RUNTIMES.names()
    runtime = make_runtime(Settings(runtime="fourth", instance_id="lab4"))
    assert isinstance(runtime, Runtime) and type(runtime).__name__ == "FourthRuntime"
    assert (runtime.name, runtime.instance_id) == ("fourth", "lab4")  # type: ignore[attr-defined]


def test_an_unknown_runtime_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(runtime="nope")
    message = str(refused.value)
    assert "SERVICELAB_RUNTIME='nope'" in message
    assert "known: docker, kubernetes, local, memory" in message
    # A lab given settings unchecked is refused all the same, by the registry.
    with pytest.raises(UnknownImplementation, match="known: docker, kubernetes, local"):
        make_runtime(Settings.model_construct(runtime="nope"))


def test_a_name_for_something_else_is_refused_naming_it(fourth_package: Path) -> None:
    with pytest.raises(TypeError) as refused:
        make_runtime(Settings(runtime="wrong"))
    message = str(refused.value)
    assert f"'wrong' ({MODULE}:NotARuntime, from servicelab-fourth-runtime 1.0)" in message
    assert "is not a servicelab.runtimes.base.Runtime" in message
